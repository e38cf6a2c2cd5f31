"""The synthetic data engine: seeds -> augmentation, paraphrasing, contrastive hard benign -> curation rounds.

    guardray synth --config configs/demo.yaml [key=value ...]        # or: python jobs/synth.py configs/demo.yaml
    run_synth(cfg, seeds=None, round=0) -> SynthResult(examples, report, path)

GeneratorReplicas write (`generator` block: model, replicas, batch size, sampling); a CuratorPool curates
(`curator` block). Each stage is written to a versioned Parquet dataset under the run directory:

    runs/NAME/synth/v{round}/augment/data.parquet       raw candidates of each strategy (`synth.strategies`)
    runs/NAME/synth/v{round}/paraphrase/data.parquet
    runs/NAME/synth/v{round}/contrastive/data.parquet
    runs/NAME/synth/v{round}/curated/data.parquet       the curated synthetic examples (seeds not included)
    runs/NAME/synth/v{round}/curation.json              inputs, kept, dropped per reason per round and category,
                                                        generation stats and samples of kept and dropped texts
    .../<stage>/manifest.json                           written last: the stage is complete

A stage whose manifest exists and whose inputs (config fingerprint) are unchanged is loaded, not redone, so an
interrupted run resumes where it stopped; a stage whose config changed is redone (and says so). Every example
carries provenance: seed_id, parent_id, stage, round, generator (model@weights-version), via `Example.derive`.
Drops are counted, never silent: request -> generation -> candidates (extra list items cut and counted) ->
curation (inputs = kept + dropped per reason, exactly).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from guardray.core import augment as A
from guardray.core.config import Config, load_config, to_dict
from guardray.core.records import DataError, Example, read_examples, write_examples
from guardray.core.taxonomy import BUILTIN, load_policy
from guardray.data import single_prompts

STAGES = A.STRATEGIES


@dataclass
class SynthResult:
    examples: list[Example]  # curated synthetic examples
    report: dict  # the content of curation.json
    path: Path  # runs/NAME/synth/v{round}


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def generation_settings(cfg: Config) -> dict:
    """The generator fields a request's output depends on (not the scheduling ones): part of every fingerprint
    that decides whether generated data can be reused (here per synth stage, in the pipeline per run step)."""
    g = to_dict(cfg.generator)
    for k in ("replicas", "batch_size", "max_restarts", "max_task_retries", "gpu_memory_utilization",
              "cpu_kv_cache_gib", "vllm_compile"):
        g.pop(k, None)
    return g


def _gen_fingerprint(cfg: Config, strategy: str, seeds: list[Example], round: int) -> str:
    policy = load_policy(cfg.policy)  # its definitions are in the prompts (the built-in's: as before policies)
    extra = [] if policy.path == BUILTIN.path else [[(c.code, c.name, c.definition) for c in policy.categories]]
    return fingerprint("gen", strategy, round, cfg.run.seed, generation_settings(cfg), to_dict(cfg.synth),
                        [(s.id, s.text, s.label) for s in seeds], *extra)


def _judge_fingerprint(cfg: Config) -> str:
    """The judge checkpoint's metadata (threshold, validation metrics, data), so a retrained judge at the same path
    (the pipeline's seeds-only judge) re-curates."""
    from guardray.classifier import META_FILE
    meta = Path(cfg.curator.judge_model) / META_FILE if cfg.curator.judge_model else None
    return meta.read_text() if meta is not None and meta.is_file() else ""


def _stage_done(folder: Path, fingerprint: str) -> dict | None:
    m = folder / "manifest.json"
    if not m.exists():
        return None
    man = json.loads(m.read_text())
    if man.get("fingerprint") != fingerprint:
        print(f"[synth] {folder.name}: config or seeds changed since it was written; redoing it", flush=True)
        return None
    return man


def _write_stage(folder: Path, examples: list[Example], manifest: dict) -> None:
    """Data first (atomically renamed), manifest last: a stage with a manifest is complete."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").unlink(missing_ok=True)
    part = folder / "data.tmp.parquet"
    write_examples(examples, part)
    part.replace(folder / "data.parquet")
    (folder / "manifest.json").write_text(json.dumps({**manifest, "rows": len(examples)}, indent=1))


def _read_stage(folder: Path) -> list[Example]:
    man = json.loads((folder / "manifest.json").read_text())
    if man.get("rows", 0) == 0:
        return []
    return read_examples(folder / "data.parquet").examples


def seed_language(e: Example) -> str:
    """A seed's language: its `lang:<iso>` tag, English ("en") without one."""
    return next((t.split(":", 1)[1] for t in e.tags if t.startswith("lang:")), "en")


def select_seeds(cfg: Config, seeds: list[Example] | None) -> list[Example]:
    if seeds is None:
        from guardray.data import load_seeds
        seeds = load_seeds(cfg.data.seeds, skip_bad=cfg.data.skip_bad_rows, policy=load_policy(cfg.policy))
    seeds = single_prompts(seeds)  # the generator rewrites single prompts, not responses or conversations
    if not seeds:
        raise DataError("synth: no seed examples; set data.seeds to a jsonl/csv/parquet file")
    if cfg.synth.max_seed_chars:
        seeds = [s for s in seeds if len(s.text) <= cfg.synth.max_seed_chars]
    if cfg.synth.seed_languages:
        have = sorted({seed_language(s) for s in seeds})
        seeds = [s for s in seeds if seed_language(s) in cfg.synth.seed_languages]
        if not seeds:
            raise DataError(f"synth.seed_languages {list(cfg.synth.seed_languages)}: no seed is in those languages "
                            f"(the seeds have {have}; a seed's language is its lang:<iso> tag, en without one)")
    if cfg.synth.max_seeds and len(seeds) > cfg.synth.max_seeds:
        # stratified: shuffle each (label, category) group, then take from the groups in turn
        from guardray.core.curation import category_key
        rnd = random.Random(cfg.run.seed)
        groups: dict[str, list[Example]] = {}
        for s in seeds:
            groups.setdefault(category_key(s), []).append(s)
        queues = [rnd.sample(g, len(g)) for _, g in sorted(groups.items())]
        picked: list[Example] = []
        while len(picked) < cfg.synth.max_seeds:
            for q in queues:
                if q and len(picked) < cfg.synth.max_seeds:
                    picked.append(q.pop())
        seeds = picked
    return list(seeds)


def read_texts(paths) -> list[str]:
    """Texts of evaluation/decontamination files (any Example format; a folder means its eval.jsonl)."""
    out: list[str] = []
    for p in paths:
        p = Path(p)
        if p.is_dir() and (p / "eval.jsonl").exists():
            p = p / "eval.jsonl"
        if p.suffix == ".jsonl" and p.exists():  # tolerant: only "text" is needed here
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
                if line.strip():
                    try:
                        t = json.loads(line).get("text")
                    except (json.JSONDecodeError, AttributeError):
                        raise DataError(f"{p}:{i + 1}: not a JSON object with a 'text' field") from None
                    if isinstance(t, str) and t.strip():
                        out.append(t)
        else:
            out += [e.text for e in read_examples(p, skip_bad=True, strict_categories=False,
                                                  allow_duplicate_ids=True).examples]
    return out


@dataclass
class _Submitted:
    """One generation stage in flight: its plans, the batches and their ObjectRefs."""
    strategy: str
    plans: list
    batches: list[list]
    refs: list
    t0: float


def _batches(n: int, batch_size: int, replicas: int) -> list[tuple[int, int]]:
    """Split n requests into equal batches of at most batch_size, as many as a multiple of the replica count
    allows, so no replica waits while another works through a bigger share."""
    k = max(1, -(-n // batch_size))
    k = -(-k // replicas) * replicas if n >= replicas else k
    k = min(k, n) or 1
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(k) if bounds[i + 1] > bounds[i]]


def _submit_stage(cfg: Config, strategy: str, seeds: list[Example], replicas: list, round: int,
                  counter: list[int]) -> _Submitted:
    s = cfg.synth
    plans = A.plan_requests(strategy, seeds, seed=cfg.run.seed, round=round, per_seed=s.per_seed,
                            augment_per_category=s.augment_per_category,
                            contrastive_per_seed=s.contrastive_per_seed, items_per_request=s.items_per_request,
                            styles=s.styles, shots=s.shots, tokens_per_item=s.tokens_per_item,
                            everyday_per_genre=s.everyday_per_genre, everyday_tokens=s.everyday_tokens,
                            policy=load_policy(cfg.policy))
    batches = [plans[i:j] for i, j in _batches(len(plans), cfg.generator.batch_size, len(replicas))]
    refs = []
    for b in batches:  # explicit fan-out, round-robin across stages too (counter), so replicas stay evenly busy
        refs.append(replicas[counter[0] % len(replicas)].generate.remote([p.request for p in b]))
        counter[0] += 1
    return _Submitted(strategy, plans, batches, refs, time.perf_counter())


def _collect_stage(sub: _Submitted, round: int, progress: bool) -> tuple[list[Example], dict]:
    import ray
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(sub.plans), desc=f"synth v{round}: {sub.strategy}", unit="req")
    pending = list(sub.refs)
    index = {r: i for i, r in enumerate(sub.refs)}
    while pending:
        done, pending = ray.wait(pending, num_returns=1, fetch_local=False)
        if bar:
            bar.update(sum(len(sub.batches[index[d]]) for d in done))
    if bar:
        bar.close()
    gens = [g for batch in ray.get(sub.refs) for g in batch]
    seconds = time.perf_counter() - sub.t0
    examples, empty, extra, truncated, tokens = [], 0, 0, 0, 0
    finish: dict[str, int] = {}
    for plan, gen in zip(sub.plans, gens):
        if gen.prompt_id != plan.request.prompt_id:
            raise AssertionError(f"generation {gen.prompt_id} does not answer request {plan.request.prompt_id}")
        kids, cut = A.candidates_from_generation(plan, gen, round=round)
        examples += kids
        extra += cut
        empty += not kids
        truncated += bool(gen.sampling.get("prompt_truncated"))
        tokens += int(gen.sampling.get("completion_tokens", 0))
        finish[gen.finish_reason] = finish.get(gen.finish_reason, 0) + 1
    stats = {"requests": len(sub.plans), "generations": len(gens), "candidates": len(examples),
             "generations_without_candidates": empty, "extra_items_cut": extra, "prompts_truncated": truncated,
             "finish_reasons": finish, "completion_tokens": tokens, "seconds_since_submit": round_(seconds),
             "batches": len(sub.batches)}
    return examples, stats


def round_(x: float) -> float:
    return round(float(x), 2)


def _samples(examples: list[Example], per_key: int = 3) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in examples:
        k = f"{e.stage}/{e.label}"
        if len(out.setdefault(k, [])) < per_key:
            out[k].append(e.text)
    return out


def run_synth(cfg: Config, seeds: list[Example] | None = None, *, round: int = 0, progress: bool = True,
              replicas: list | None = None) -> SynthResult:
    """Generate and curate synthetic examples for `round` (resumable per stage); see the module docstring.

    `seeds`: None = the configured seed files (`data.seeds`, else the packaged set). `replicas`: existing
    GeneratorReplicas to write with (left running, e.g. for later rollouts); None = start
    `generator.replicas` of them and release them (and their CPUs/GPUs) before curation."""
    import ray
    from guardray.curator import CuratorPool
    from guardray.generator import make_replicas
    from guardray.ray_utils import init_ray

    t_start = time.perf_counter()
    if seeds is None:
        from guardray.data import load_seeds
        seeds = load_seeds(cfg.data.seeds, skip_bad=cfg.data.skip_bad_rows, policy=load_policy(cfg.policy))
    # the fidelity rounds judge against every prompt seed, not only the ones written from
    all_seeds = single_prompts(seeds)
    seeds = select_seeds(cfg, seeds)
    print(f"[synth] {len(seeds)} of {len(all_seeds)} seeds go to the generator (synth.max_seeds "
          f"{cfg.synth.max_seeds or 'all'}, max_seed_chars {cfg.synth.max_seed_chars or 'any'}, seed_languages "
          f"{','.join(cfg.synth.seed_languages) or 'all'})", flush=True)
    out = cfg.run_dir / "synth" / f"v{round}"
    out.mkdir(parents=True, exist_ok=True)
    init_ray(cfg.run.ray_address)

    candidates: list[Example] = []
    stage_stats: dict[str, dict] = {}
    own = replicas is None
    replicas = [] if replicas is None else list(replicas)
    try:
        todo, done_stages = [], {}
        for strategy in cfg.synth.strategies:
            folder = out / strategy
            fp = _gen_fingerprint(cfg, strategy, seeds, round)
            man = _stage_done(folder, fp)
            if man is not None:
                done_stages[strategy] = (_read_stage(folder), {**man.get("stats", {}), "resumed": True})
                print(f"[synth] {strategy}: done before ({len(done_stages[strategy][0])} candidates), loaded from "
                      f"{folder}", flush=True)
            else:
                todo.append((strategy, folder, fp))
        t_gen = time.perf_counter()
        if todo and not replicas:
            replicas = make_replicas(cfg.generator, cfg.resources, seed=cfg.run.seed)
        counter = [0]
        # every pending stage is submitted up front (they are independent), then collected and written in order
        subs = [(_submit_stage(cfg, st, seeds, replicas, round, counter), folder, fp) for st, folder, fp in todo]
        for sub, folder, fp in subs:
            exs, stats = _collect_stage(sub, round, progress)
            _write_stage(folder, exs, {"stage": sub.strategy, "round": round, "fingerprint": fp, "stats": stats})
            done_stages[sub.strategy] = (exs, stats)
            print(f"[synth] {sub.strategy}: {stats['requests']} requests -> {len(exs)} candidates "
                  f"({stats['completion_tokens']} tokens, done {stats['seconds_since_submit']:.0f}s after submit)",
                  flush=True)
        for strategy in cfg.synth.strategies:
            candidates += done_stages[strategy][0]
            stage_stats[strategy] = done_stages[strategy][1]
        if todo:
            stage_stats["seconds"] = round_(time.perf_counter() - t_gen)  # all generation stages, overlapped
        if replicas:
            infos = ray.get([r.info.remote() for r in replicas])
            stage_stats["replicas"] = [{k: i.get(k) for k in ("name", "backend", "model", "device", "threads",
                                                             "requests", "completion_tokens", "seconds",
                                                             "cpu_seconds", "restarted")} for i in infos]
    finally:
        for r in replicas if own else ():  # free their CPUs/GPUs for the curators
            ray.kill(r, no_restart=True)

    folder = out / "curated"
    cur_fp = fingerprint("curate", [(s, (stage_stats.get(s) or {}).get("candidates")) for s in cfg.synth.strategies],
                          [_gen_fingerprint(cfg, s, seeds, round) for s in cfg.synth.strategies],
                          {k: v for k, v in to_dict(cfg.curator).items()
                           if k not in ("workers", "max_restarts", "max_task_retries")},
                          list(cfg.data.decontaminate), list(cfg.data.eval_sets), _judge_fingerprint(cfg))
    man = _stage_done(folder, cur_fp)
    if man is not None and (out / "curation.json").exists():
        kept = _read_stage(folder)
        report = json.loads((out / "curation.json").read_text())
        print(f"[synth] curated: done before ({len(kept)} examples), loaded from {folder}", flush=True)
        return SynthResult(kept, report, out)

    reference = [s.text for s in seeds]
    for j in range(round):  # the pool so far: earlier rounds' curated data
        prev = cfg.run_dir / "synth" / f"v{j}" / "curated"
        if (prev / "manifest.json").exists():
            reference += [e.text for e in _read_stage(prev)]
    decontam = read_texts(list(cfg.data.decontaminate) + list(cfg.data.eval_sets))
    t0 = time.perf_counter()
    with CuratorPool(cfg.curator, cfg.resources, reference_texts=reference, judge_model=cfg.curator.judge_model,
                     decontam_texts=decontam, progress=progress, label_reference=all_seeds,
                     policy=load_policy(cfg.policy)) as pool:
        res = pool.curate(candidates, stage="synth", round=round)
    cur_s = time.perf_counter() - t0
    report = {
        "run": cfg.run.name, "round": round, "seeds": len(seeds), "strategies": list(cfg.synth.strategies),
        "generator": {"model": cfg.generator.model, "backend": cfg.generator.backend,
                      "replicas": cfg.generator.replicas, "batch_size": cfg.generator.batch_size,
                      "max_new_tokens": cfg.generator.max_new_tokens},
        "generation": stage_stats, "curation": res.report, "curation_seconds": round_(cur_s),
        "dropped_samples": res.dropped_samples, "kept_samples": _samples(res.kept),
        "seconds_total": round_(time.perf_counter() - t_start),
    }
    _write_stage(folder, res.kept, {"stage": "curated", "round": round, "fingerprint": cur_fp})
    (out / "curation.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    c = res.report
    print(f"[synth] curated: {c['inputs']} candidates -> {c['kept']} kept, {c['dropped_total']} dropped "
          f"{c['dropped']} in {cur_s:.0f}s; report: {out / 'curation.json'}", flush=True)
    return SynthResult(res.kept, report, out)


def cli(argv: list[str]) -> int:
    from guardray.errors import UsageError
    ap = argparse.ArgumentParser(prog="guardray synth", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", "-c", help="YAML config (default: built-in defaults)")
    ap.add_argument("--round", type=int, default=0, help="dataset version to write (synth/v{round})")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. synth.per_seed=1")
    args = ap.parse_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise UsageError(f"{bad[0]!r}: overrides look like generator.replicas=2 (the config goes after --config)")
    if args.round < 0:
        raise UsageError("--round must be >= 0")
    cfg = load_config(args.config, args.overrides)
    if cfg.curator.judge_model == "seeds":  # the pipeline's seeds-only judge: train (or reuse) it first
        from guardray.data import load_seeds, single_prompts
        from guardray.pipeline import RunState, seeds_judge
        from guardray.ray_utils import init_ray
        init_ray(cfg.run.ray_address)
        prompts = single_prompts(load_seeds(cfg.data.seeds, skip_bad=cfg.data.skip_bad_rows,
                                            policy=load_policy(cfg.policy)))
        cfg = seeds_judge(cfg, prompts, RunState(Path(cfg.run_dir)))
    res = run_synth(cfg, round=args.round, progress=not args.no_progress)
    print(json.dumps({"path": str(res.path), "kept": len(res.examples),
                      "dropped": res.report["curation"]["dropped"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
