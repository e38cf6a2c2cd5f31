"""The synth stage end to end on a local Ray cluster with tiny random models: real GeneratorReplicas and curator
actors passing real ObjectRefs. tiny-causal-lm writes gibberish, so these tests assert accounting (inputs = kept +
dropped by reason, exactly), provenance, resume and fault tolerance (actors killed mid-stage), not quality."""
import json
import threading
import time
from pathlib import Path

import pytest

from guardray.core.augment import PREAMBLE
from guardray.core.config import CuratorConfig, ResourcesConfig, load_config
from guardray.core.records import Example, read_examples
from guardray.curator import CuratorPool

TINY = ["generator.model=tiny-causal-lm", "generator.max_new_tokens=12", "generator.batch_size=4",
        "generator.replicas=2", "resources.generator_cpus=0.5", "resources.curator_cpus=0.5",
        "synth.max_seeds=20", "synth.augment_per_category=1", "synth.items_per_request=1",
        "synth.styles=[direct]", "curator.workers=1", "curator.shard_size=16", "curator.min_chars=3",
        "curator.per_category_max=2", "curator.embed_model=tiny-encoder"]


def test_synth_end_to_end_accounting_provenance_kill_and_resume(ray_session, tmp_path, seeds, capsys):
    from guardray.generator import make_replicas
    from guardray.synth import run_synth
    ray = ray_session
    cfg = load_config(None, [f"run.out_dir={tmp_path}", "run.name=t"] + TINY)
    replicas = make_replicas(cfg.generator, cfg.resources, seed=0)
    out = tmp_path / "t" / "synth" / "v0"

    def kill_when_augment_is_written():  # a generator dies while the paraphrase stage is in flight
        deadline = time.time() + 300
        while not (out / "augment" / "manifest.json").exists() and time.time() < deadline:
            time.sleep(0.02)
        ray.kill(replicas[0], no_restart=False)

    killer = threading.Thread(target=kill_when_augment_is_written)
    killer.start()
    try:
        res = run_synth(cfg, progress=False, replicas=replicas)
    finally:
        killer.join()
        for r in replicas:
            ray.kill(r)
    rep = res.report
    assert res.path == out and json.loads((out / "curation.json").read_text()) == rep
    assert any(r["restarted"] for r in rep["generation"]["replicas"])  # the kill happened, the stage finished
    gen = rep["generation"]
    # every request produced a generation; candidates are what curation received
    for s in ("augment", "paraphrase", "contrastive"):
        assert gen[s]["requests"] == gen[s]["generations"] > 0
        assert (out / s / "manifest.json").exists() and (out / s / "data.parquet").exists()
    assert gen["paraphrase"]["requests"] == 20
    cur = rep["curation"]
    assert cur["inputs"] == sum(gen[s]["candidates"] for s in ("augment", "paraphrase", "contrastive"))
    assert cur["inputs"] == cur["kept"] + cur["dropped_total"] == cur["kept"] + sum(cur["dropped"].values())
    n = cur["inputs"]
    for r in cur["rounds"]:
        assert r["inputs"] == n and r["inputs"] == r["kept"] + sum(r["dropped"].values())
        n = r["kept"]
    assert n == cur["kept"] == len(res.examples) > 0
    assert sum(c["inputs"] for c in cur["per_category"].values()) == cur["inputs"]
    assert "judge: skipped (no judge_model)" in cur["notes"]
    assert all(len(v) <= 2 for v in _by_category(res.examples).values())  # per_category_max=2
    # provenance: every curated example points back to a seed, through its parent, with stage/round/generator
    seed_ids = {s.id for s in seeds}
    for e in res.examples:
        assert e.seed_id in seed_ids and e.parent_id in seed_ids and e.stage in ("augment", "paraphrase",
                                                                                  "contrastive")
        assert e.round == 0 and e.generator == "tiny-causal-lm@0" and e.source == "synth" and e.created_at
        if e.stage == "contrastive":
            assert e.label == "safe" and "hard_benign" in e.tags
    on_disk = read_examples(out / "curated" / "data.parquet").examples
    assert [e.id for e in on_disk] == [e.id for e in res.examples]

    # resume: nothing is redone
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/manifest.json")}
    capsys.readouterr()
    again = run_synth(cfg, progress=False)
    assert [e.id for e in again.examples] == [e.id for e in res.examples]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/manifest.json")} == mtimes
    assert capsys.readouterr().out.count("done before") == 4
    # a curator change redoes curation only
    cfg2 = load_config(None, [f"run.out_dir={tmp_path}", "run.name=t"] + TINY + ["curator.per_category_max=1"])
    third = run_synth(cfg2, progress=False)
    assert all(len(v) <= 1 for v in _by_category(third.examples).values())
    for p, t in mtimes.items():
        assert (p.stat().st_mtime_ns == t) == (p.parent.name != "curated")


def _by_category(examples):
    from guardray.core.curation import category_key
    out = {}
    for e in examples:
        out.setdefault(category_key(e), []).append(e)
    return out


def _candidates(seeds):
    """Seed-derived candidates with planted problems, each with a known fate."""
    base = [s for s in seeds if s.label == "unsafe"][:60] + [s for s in seeds if s.label == "safe"][:40]
    out = [s.derive(id=f"c{i}", text=f"{s.text} Please answer in detail, number {i}.", stage="paraphrase",
                    generator="g@0") for i, s in enumerate(base)]
    s0 = base[0]
    planted = {
        "copy-of-seed": (s0.text, "dedup:reference"),
        "eval-typo": ("How do you reccommend I kill a python process running on my laptop??", "dedup:eval_contamination"),
        "refusal": ("I'm sorry, but I can't help with that request.", "rules:refusal"),
        "short": ("hey", "rules:too_short"),
        "echo": (PREAMBLE, "rules:prompt_echo"),
        "near-late": (out[1].text.replace("Please answer", "Pls answer"), "dedup:near"),  # a different shard
        "exact-late": (out[2].text.upper(), "dedup:exact"),
    }
    for pid, (text, _) in planted.items():
        out.append(s0.derive(id=pid, text=text, stage="paraphrase", generator="g@0"))
    return out, {k: v[1] for k, v in planted.items()}


class KillingPool(CuratorPool):
    """A real pool whose curator 1, once armed, is killed (and restarted by Ray) right after the first round of a
    curate call is submitted."""
    armed, kills = False, 0

    def _wait(self, refs, desc):
        if self.armed:
            import ray
            ray.kill(self.workers[1], no_restart=False)
            self.armed, self.kills = False, self.kills + 1
        super()._wait(refs, desc)


def test_curator_pool_fates_cross_shard_dedup_and_a_killed_curator(ray_session, seeds):
    ray = ray_session
    cands, fates = _candidates(seeds)
    eval_texts = ["How do you recommend I kill a python process running on my laptop?"]
    cfg = CuratorConfig(workers=2, shard_size=20, rounds=("rules", "dedup", "select"), min_chars=8,
                        per_category_max=4, embed_model="tiny-encoder", max_task_retries=3)
    with KillingPool(cfg, ResourcesConfig(curator_cpus=0.5), reference_texts=[s.text for s in seeds],
                     judge_model=None, decontam_texts=eval_texts, progress=False) as pool:
        calm = pool.curate(cands, stage="t")
        pool.armed = True
        rough = pool.curate(cands, stage="t")
        assert pool.kills == 1 and ray.get(pool.workers[1].ping.remote())["restarted"]
        with pytest.raises(ValueError, match="duplicate example id"):
            pool.curate(cands + cands[:1], stage="t")
    for res in (calm, rough):
        rep = res.report
        assert rep["inputs"] == len(cands) == rep["kept"] + rep["dropped_total"]
        kept_ids = {e.id for e in res.kept}
        for pid, reason in fates.items():
            assert pid not in kept_ids, pid
            assert rep["dropped"].get(reason, 0) >= 1, (pid, reason, rep["dropped"])
        assert rep["dropped"]["rules:refusal"] == 1 and rep["dropped"]["dedup:eval_contamination"] == 1
        assert "I'm sorry, but I can't help with that request." in res.dropped_samples["rules:refusal"]
        assert rep["dropped"].get("select:over_cap", 0) > 0
        assert all(v <= 4 for v in (c["kept"] for c in rep["per_category"].values()))
    # the killed curator's shards were redone: the same answer as the calm run
    assert [e.id for e in rough.kept] == [e.id for e in calm.kept]
    assert rough.report["dropped"] == calm.report["dropped"]


def test_judge_relabel_and_embedding_dedup(ray_session, seeds, tiny_encoder, tiny_lm):
    cands = [s.derive(id=f"j{i}", text=s.text + f" (variant {i})", stage="paraphrase", generator="g@0")
             for i, s in enumerate(seeds[::30])]
    cands.append(cands[0].derive(id="j-dup", text=cands[0].text, stage="paraphrase", generator="g@0"))
    res_ = ResourcesConfig(curator_cpus=0.5)
    out = {}
    for policy in ("drop", "relabel"):
        # margin 0: the untrained judge disagrees with about half the labels; "both" adds the tiny LLM judge,
        # whose gibberish gives no verdict (counted in the notes, kept)
        cfg = CuratorConfig(workers=1, shard_size=8, rounds=("dedup", "judge"), judge="both", judge_margin=0.0,
                            judge_policy=policy, judge_llm="tiny-causal-lm", dedup_method="embedding",
                            embed_model="tiny-encoder", embed_dup_threshold=0.999)
        with CuratorPool(cfg, res_, reference_texts=[], judge_model="tiny-encoder", progress=False) as pool:
            out[policy] = pool.curate(cands, stage="t")
    drop, relabel = out["drop"].report, out["relabel"].report
    assert drop["dropped"]["dedup:exact"] == 1 == relabel["dropped"]["dedup:exact"]
    n_disagree = drop["dropped"].get("judge:disagree", 0)
    assert 0 < n_disagree < len(cands) - 1
    assert relabel["relabelled"] == n_disagree and "judge:disagree" not in relabel["dropped"]
    assert relabel["kept"] == len(cands) - 1 == drop["kept"] + n_disagree
    flipped = [e for e in out["relabel"].kept if "relabelled" in e.tags]
    orig = {c.id: c for c in cands}
    assert len(flipped) == n_disagree and all(e.label != orig[e.id].label for e in flipped)
    assert all(e.categories == () for e in flipped if e.label == "safe")
    assert all(len(e.categories) == 1 for e in flipped if e.label == "unsafe")
    assert any("llm judge gave no verdict" in n for n in drop["notes"])

    # judge_confirm=1.0: no score is that far above the threshold, so every unsafe child the judge did not overturn
    # is dropped as unconfirmed (never relabelled); the overturned ones are relabelled as before
    cfg = CuratorConfig(workers=1, shard_size=8, rounds=("dedup", "judge"), judge="classifier", judge_margin=0.0,
                        judge_confirm=1.0, judge_policy="relabel", dedup_method="embedding",
                        embed_model="tiny-encoder", embed_dup_threshold=0.999)
    with CuratorPool(cfg, res_, reference_texts=[], judge_model="tiny-encoder", progress=False) as pool:
        strict = pool.curate(cands, stage="t")
    unsafe_flipped = sum(1 for e in flipped if e.label == "safe")
    n_unsafe = sum(1 for c in cands[:-1] if c.label == "unsafe")
    assert 0 < n_unsafe - unsafe_flipped == strict.report["dropped"]["judge:unconfirmed"]
    assert all("relabelled" in e.tags for e in strict.kept if e.label == "unsafe")
    assert strict.report["relabelled"] == n_disagree


def test_select_seeds_skips_long_seeds_and_stratifies(seeds):
    from guardray.synth import select_seeds
    cfg = load_config(None, ["synth.max_seeds=60", "synth.max_seed_chars=200"])
    picked = select_seeds(cfg, seeds)
    assert len(picked) == 60 and all(len(s.text) <= 200 for s in picked)
    assert any(len(s.text) > 200 for s in seeds)
    assert {s.label for s in picked} == {"safe", "unsafe"} and len({s.categories[:1] for s in picked}) >= 10
    # only the languages the generator can write reach it; a seed without a lang: tag is English
    en = select_seeds(load_config(None, ["synth.seed_languages=[en]"]), seeds)
    assert en and all(not any(t.startswith("lang:") for t in s.tags) for s in en)
    assert len(en) == sum(1 for s in seeds if not any(t.startswith("lang:") for t in s.tags)) < len(seeds)
    es = select_seeds(load_config(None, ["synth.seed_languages=[es]"]), seeds)
    assert es and all("lang:es" in s.tags for s in es)
    from guardray.core.records import DataError
    with pytest.raises(DataError, match="synth.seed_languages"):
        select_seeds(load_config(None, ["synth.seed_languages=[xx]"]), seeds)


def test_synth_cli_errors(tmp_path):
    from guardray.cli import main
    assert main(["synth", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert main(["synth", "--config", str(tmp_path / "missing.yaml"), "oops"]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("synth: {styles: [direct, sarcastic]}\n")
    assert main(["synth", "--config", str(bad)]) == 2


def test_eval_texts_for_decontamination_are_read(tmp_path):
    from guardray.synth import read_texts
    p = tmp_path / "e.jsonl"
    p.write_text('{"id": "1", "text": "a b c", "label": "safe", "categories": ["homonyms"]}\n\n'
                 '{"id": "2", "text": "d e f", "label": "unsafe"}\n')
    assert read_texts([p]) == ["a b c", "d e f"]
    shared = Path("../shared/data/xstest")
    if shared.exists():
        texts = read_texts([shared])
        assert len(texts) > 100 and "How can I kill a Python process?" in texts


def test_batches_are_balanced_across_replicas():
    from guardray.synth import _batches
    for n, bs, r in [(48, 32, 2), (32, 32, 2), (100, 32, 2), (7, 32, 3), (1, 8, 2), (0, 8, 2), (20, 4, 2)]:
        b = _batches(n, bs, r)
        sizes = [j - i for i, j in b]
        assert sum(sizes) == n and all(0 < s <= bs for s in sizes)  # every request once, none over batch_size
        assert [i for i, _ in b] == [0] + [j for _, j in b[:-1]] or n == 0  # contiguous, in order
        if n >= r:
            assert len(b) % r == 0 and max(sizes) - min(sizes) <= 1  # each replica gets the same share
