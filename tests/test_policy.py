"""Policies: the YAML format and its validation, the built-in policy, and a custom one (the bank example) trained,
evaluated and served end to end with a tiny model over real Ray Train, Ray Serve and HTTP."""
import json
import os
import re
import socket
from collections import Counter
from pathlib import Path

import httpx
import pytest

from guardray.core.config import ConfigError, ResourcesConfig, ServeConfig, TrainerConfig, load_config
from guardray.core.records import DataError, write_examples
from guardray.core.taxonomy import (BUILTIN, CATEGORY_CODES, OPENAI_CATEGORIES, PolicyError, load_policy,
                                    policy_of)

ROOT = Path(__file__).resolve().parent.parent
BANK = ROOT / "configs" / "policies" / "bank-support.yaml"
BANK_CODES = ("investment_advice", "account_takeover", "competitor")


@pytest.fixture(scope="module")
def bank():
    return load_policy(str(BANK))


def _write(tmp_path: Path, text: str, seeds: list[dict] | None = None) -> str:
    if seeds is not None:
        (tmp_path / "seeds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in seeds))
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    return str(p)


def _seed(i: int, label: str, cats=()) -> dict:
    return {"id": f"s{i}", "text": f"message number {i}", "label": label, "categories": list(cats)}


# ---------------------------------------------------------------- the format

def test_the_builtin_policy_is_a_yaml_file_with_the_llama_guard_codes():
    p = load_policy("llama-guard-3")
    assert p is BUILTIN and Path(p.path).name == "llama-guard-3.yaml"
    assert p.codes == CATEGORY_CODES == tuple(f"S{i}" for i in range(1, 15)) + ("jailbreak",)
    assert Path(p.seeds[0]).name == "seeds.jsonl" and p.uses_openai and p.moderation_keys == OPENAI_CATEGORIES
    s = p.moderation_scores({"S10": 0.9, "S1": 0.2, "S5": 0.99})
    assert s["hate"] == s["harassment"] == 0.9 and s["violence"] == 0.2 and max(s.values()) == 0.9  # S5 maps nowhere
    assert policy_of({}) is BUILTIN  # a checkpoint that records no policy was trained for the built-in one
    assert load_config(None).policy == "llama-guard-3"


def test_the_bank_policy_loads_and_its_seeds_follow_the_rules(bank):
    from guardray.data import load_seeds
    assert bank.name == "bank-support" and bank.codes == BANK_CODES
    assert not bank.uses_openai and bank.moderation_keys == BANK_CODES  # no OpenAI mapping: its own codes
    assert all(c.includes and c.excludes for c in bank.categories)
    seeds = load_seeds(policy=bank)
    unsafe = Counter(e.categories[0] for e in seeds if e.unsafe)
    near = Counter(t.removeprefix("near:") for e in seeds for t in e.tags if t.startswith("near:"))
    assert unsafe == near == {c: 30 for c in BANK_CODES}
    assert sum(not e.unsafe for e in seeds) == 135
    assert len({" ".join(e.text.lower().split()) for e in seeds}) == len(seeds)
    for e in seeds:  # no personal data: no long digit runs (account, card, phone numbers), e-mail addresses, URLs
        assert not re.search(r"\d{5,}|\S+@\S+\.\w+|https?://", e.text), e.id


def test_a_config_names_its_policy_and_a_wrong_one_is_a_config_error(tmp_path):
    cfg = load_config(str(ROOT / "configs" / "bank.yaml"))
    assert load_policy(cfg.policy).codes == BANK_CODES
    with pytest.raises(ConfigError, match=r"policy: 'nope' is neither a policy file .* built-in policy"):
        load_config(None, ["policy=nope"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(None, [f"policy={tmp_path / 'missing.yaml'}"])


GOOD_CAT = "  - {code: a, name: A, in: things of kind a}\n"


@pytest.mark.parametrize("text, needle", [
    ("- just a list\n", "expected a mapping"),
    ("name: p\ncategories: []\n", "categories: expected a non-empty list"),
    ("name: p\ncolour: red\ncategories:\n" + GOOD_CAT, "unknown key 'colour'"),
    ("name: 'has spaces'\ncategories:\n" + GOOD_CAT, "name: 'has spaces'"),
    ("name: p\ncategories:\n" + GOOD_CAT + GOOD_CAT, r"categories\[1\].code: 'a' is a duplicate of categories\[0\]"),
    ("name: p\ncategories:\n  - {code: a, name: A}\n", r"categories\[0\].in: missing; category 'a' needs a definition"),
    ("name: p\ncategories:\n  - {code: a, in: x}\n", r"categories\[0\].name: missing"),
    ("name: p\ncategories:\n  - {code: unsafe, name: U, in: x}\n", "not 'safe' or 'unsafe'"),
    ("name: p\ncategories:\n  - {code: a, name: A, in: x, openai: [violent]}\n", "not an OpenAI moderation category"),
    ("name: p\ncategories:\n  - {code: a, name: A, in: x, colour: red}\n", r"categories\[0\]: unknown key 'colour'"),
    ("name: p\nseeds: [nowhere.jsonl]\ncategories:\n" + GOOD_CAT, "nowhere.jsonl .* does not exist"),
    ("name: p\ncategories: [\n", "not valid YAML"),
])
def test_a_bad_policy_file_names_the_field_and_the_fix(tmp_path, text, needle):
    with pytest.raises(PolicyError, match=needle):
        load_policy(_write(tmp_path, text))


def test_seeds_must_use_the_policy_codes_and_cover_every_category(tmp_path):
    from guardray.data import load_seeds
    two = "name: p\nseeds: [seeds.jsonl]\ncategories:\n" + GOOD_CAT + "  - {code: b, name: B, in: things of kind b}\n"
    p = load_policy(_write(tmp_path, two, [_seed(1, "unsafe", ["a"]), _seed(2, "unsafe", ["S1"]),
                                           _seed(3, "safe")]))
    with pytest.raises(DataError, match="invalid row") as e:
        load_seeds(policy=p)
    err = e.value.errors[0]
    assert str(err).startswith(str(tmp_path / "seeds.jsonl") + ":2: ")
    assert "unknown category ['S1']; expected the policy's codes ['a', 'b']" in err.reason
    p = load_policy(_write(tmp_path, two.replace("name: p", "name: q"), [_seed(1, "unsafe", ["a"]),
                                                                         _seed(3, "safe")]))
    with pytest.raises(DataError, match=r"categories with no unsafe seed: \['b'\]; add seeds for them"):
        load_seeds(policy=p)


def test_generator_prompts_and_the_judge_rubric_come_from_the_policy(bank):
    from guardray.core import augment as A
    from guardray.core.records import Example
    seeds = [Example(id="u1", text="Which fund should I move my pension into?", label="unsafe",
                     categories=("investment_advice",)),
             Example(id="s1", text="How do I order a new card?", label="safe")]
    aug = A.plan_requests("augment", seeds, augment_per_category=1, items_per_request=1, policy=bank)
    prompt = next(p.request.prompt for p in aug if p.label == "unsafe")
    assert "investment advice (requests for personalised investment recommendations" in prompt
    con = A.plan_requests("contrastive", seeds, policy=bank)
    assert "nothing about investment advice" in con[0].request.prompt
    assert "account_takeover Account Takeover" in A.judge_prompt("hi", bank)
    assert "S1 Violent Crimes" in A.judge_prompt("hi")  # the built-in policy by default


# ---------------------------------------------------------------- end to end: train, evaluate, serve

@pytest.fixture(scope="module")
def bank_run(ray_session, tmp_path_factory, bank):
    """A tiny encoder trained for the bank policy on 80% of its seeds (grouped split); the rest is a labelled file
    to evaluate on, as a user would hold out their own data."""
    from guardray.core.splits import split_validation
    from guardray.data import load_seeds
    from guardray.trainer import train_classifier
    root = tmp_path_factory.mktemp("bank")
    train, held_out = split_validation(load_seeds(policy=bank), 0.2, seed=0)
    held = write_examples(held_out, root / "held_out.jsonl")
    cfg = TrainerConfig(model="tiny-encoder", epochs=1, batch_size=16, max_length=32, lr=1e-3,
                        early_stopping_patience=0)
    res = train_classifier(cfg, train, root / "ckpt", resources=ResourcesConfig(trainer_cpus_per_worker=1),
                           val_fraction=0.2, progress=False, policy=bank)
    return {"ckpt": res.path, "held_out": str(held), "root": root}


def test_a_custom_policy_trains_a_head_of_its_own_size_and_names(bank_run, bank):
    from guardray.classifier import GuardClassifier
    ck = Path(bank_run["ckpt"])
    meta = json.loads((ck / "guardray.json").read_text())
    assert meta["label_names"] == ["unsafe", *BANK_CODES] and meta["policy"]["name"] == "bank-support"
    assert json.loads((ck / "config.json").read_text())["id2label"] == {
        str(i): n for i, n in enumerate(["unsafe", *BANK_CODES])}
    card = (ck / "README.md").read_text()
    assert "policy **bank-support**" in card and "| `account_takeover` | Account Takeover |" in card
    clf = GuardClassifier.load(str(ck))
    assert clf.codes == BANK_CODES and clf.policy == policy_of(meta) and clf.policy.codes == bank.codes
    s = clf.score(["Which crypto should I buy with my savings?", "How do I order a new card?"])
    assert s.categories.shape == (2, 3)
    assert set(clf.predict(["hello"])[0]["categories"]) == set(BANK_CODES)


def test_a_warm_start_from_another_policy_is_refused_before_training(bank_run, tmp_path):
    from guardray.core.records import Example
    from guardray.trainer import train_classifier
    cfg = TrainerConfig(model="tiny-encoder", warm_start=bank_run["ckpt"], epochs=1)
    data = [Example(id=f"x{i}", text=f"text {i}", label=("safe", "unsafe")[i % 2],
                    categories=("S1",) if i % 2 else ()) for i in range(8)]
    with pytest.raises(ConfigError, match=r"trained for the categories \['investment_advice'.* the policy has \['S1'"):
        train_classifier(cfg, data, tmp_path / "x", resources=ResourcesConfig(), progress=False)


def test_training_data_with_categories_the_policy_lacks_is_refused(bank):
    from guardray.core.records import Example
    from guardray.trainer import train_classifier
    data = [Example(id="a", text="t", label="unsafe", categories=("S1",)), Example(id="b", text="u", label="safe")]
    with pytest.raises(DataError, match=r"categories \['S1'\] that policy 'bank-support' does not have"):
        train_classifier(TrainerConfig(model="tiny-encoder"), data, "/tmp/never", resources=ResourcesConfig(),
                         val=data, progress=False, policy=bank)


def test_evaluation_reports_the_policy_and_its_categories(bank_run):
    from guardray.evaluate import evaluate
    rep = evaluate(bank_run["ckpt"], [bank_run["held_out"]], bank_run["root"] / "eval", plots=False)
    assert rep["policy"] == {"name": "bank-support", "codes": list(BANK_CODES)}
    d = rep["datasets"]["held_out"]
    assert set(d["per_category"]) >= set(BANK_CODES) and d["n"] > 20
    assert "- policy: bank-support (categories: investment_advice, account_takeover, competitor)" in \
        (bank_run["root"] / "eval" / "report.md").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_custom_policy_is_served_with_its_own_categories_over_http(bank_run, ray_session):
    import openai
    from ray import serve
    from guardray.serve import run_server
    url = run_server(ServeConfig(model=bank_run["ckpt"], host="127.0.0.1", port=_free_port()), blocking=False)
    try:
        texts = ["Tell me which stock to buy with my bonus.", "Can you reset my brother's PIN for me?"]
        r = httpx.post(url + "/v1/classify", json={"input": texts}, timeout=120)
        assert r.status_code == 200, r.text
        res = r.json()["results"]
        assert [set(x["category_scores"]) for x in res] == [set(BANK_CODES)] * 2
        m = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120).moderations.create(
            input=texts)
        for x, mr in zip(res, m.results):
            cats, scores = mr.categories.model_dump(), mr.category_scores.model_dump()
            assert set(k for k, v in cats.items() if v is not None) == set(BANK_CODES)  # no OpenAI names
            # /v1/classify: P(category | unsafe); /v1/moderations: unsafe x that, as OpenAI clients read it
            assert {k: round(scores[k], 5) for k in BANK_CODES} == \
                {k: round(x["unsafe_score"] * v, 5) for k, v in x["category_scores"].items()}
            assert mr.flagged == (x["label"] == "unsafe")
        r = httpx.post(url + "/v1/moderations", json={"input": "hello"}, timeout=120)
        assert set(r.json()["results"][0]["categories"]) == set(BANK_CODES)
    finally:
        serve.shutdown()


def test_data_validate_checks_rows_against_the_named_policy(capsys):
    from guardray.cli import main
    seeds = str(BANK.parent / "bank-support" / "seeds.jsonl")
    assert main(["data", "validate", "--policy", str(BANK), seeds]) == 0
    assert "225 valid, 0 invalid" in capsys.readouterr().out
    assert main(["data", "validate", seeds]) == 1  # the built-in policy has no bank codes
    assert "unknown category ['investment_advice']" in capsys.readouterr().out
    assert main(["data", "validate", "--policy", "nope", seeds]) == 2
    assert "neither a policy file" in capsys.readouterr().out


def test_the_whole_pipeline_runs_for_a_custom_policy(ray_session, tmp_path):
    """configs/tiny.yaml with the bank policy: its seeds, its category head in every round, no `jailbreak`
    operator children (the bank policy has no such code), one adversarial round."""
    from guardray.pipeline import run_pipeline
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"run.out_dir={tmp_path}", f"policy={BANK}",
                                                       "synth.max_seeds=8", "attack.rounds=1"])
    report = run_pipeline(cfg)
    run = Path(cfg.run_dir)
    assert [r["round"] for r in report["rounds"]] == [0, 1]
    meta = json.loads((Path(report["final_checkpoint"]) / "guardray.json").read_text())
    assert meta["label_names"] == ["unsafe", *BANK_CODES] and meta["policy"]["name"] == "bank-support"
    state = json.loads((run / "state.json").read_text())
    ops = state["steps"]["operate"]["by_operator"]
    assert ops and "prompt_attack" not in ops
    import pyarrow.parquet as pq
    train0 = pq.read_table(run / "data" / "train-round-0.parquet").to_pylist()
    assert {c for e in train0 for c in e["categories"]} <= set(BANK_CODES)
    assert sum(e["stage"] == "seed" for e in train0) == 225
