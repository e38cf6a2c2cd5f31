"""The guardray pipeline: builds every actor and runs the controller loop.

    guardray run --config configs/demo.yaml [dotted.key=value ...]        # the whole pipeline (make demo)
    guardray attack --config C --classifier CKPT [dotted.key=value ...]   # one adversarial phase
    python jobs/pipeline.py configs/demo.yaml                              # the same, as a Ray job

augment -> curate -> train -> for each round: rollout -> score -> ppo_update -> sync_weights (x updates) ->
harvest -> curate -> train (warm start) -> evaluate -> export. Actors exchange ObjectRefs (rollouts, rewards,
weights); only this controller calls ray.get / ray.wait. Every finished step is recorded in
runs/NAME/state.json with its outputs, so a re-run after a crash continues from the last finished step (a round
that was cut short is redone from its start, with the policy saved at the end of the previous round).

ASR (attack success rate, our definition): the share of fresh attacks - rewrites of held-out attack seeds sampled
from the round's policy after its PPO updates - that succeed (fool the classifier, keep the seed's meaning
(similarity >= attack.similarity_tau) and pass the validity judge), measured against the classifier the round
attacked ("before retraining") and against the one retrained on the harvest ("after retraining").
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import ray

from guardray.core.adversarial import (attack_requests, attack_style, distinct_n, make_rollouts, static_attacks,
                                      static_operator)
from guardray.core.config import Config, dump_config, load_config, to_dict
from guardray.core.records import Example, RewardBatch, Rollout, read_many, write_examples
from guardray.core.taxonomy import load_policy
from guardray.data import load_padding, single_prompts
from guardray.errors import UsageError


# ---------------------------------------------------------------- run state (resume)

class RunState:
    """runs/NAME/state.json: which steps finished and what they produced."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "state.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"steps": {}}

    def get(self, step: str):
        return self.data["steps"].get(step)

    def put(self, step: str, value) -> None:
        self.data["steps"][step] = value
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)

    def check_config(self, cfg: Config) -> list[str]:
        """Forget the finished steps that the config no longer describes, so a resumed run never mixes settings.

        Two fingerprints: the classifier's (policy and the contents of its seed files, data, synth, generator,
        curator, trainer, eval, seed: round 0 and everything after it) and the adversarial game's (generator, ppo,
        attack: rounds 1..N). The synth stage also keeps its own per-stage fingerprints. Returns the forgotten step
        names (also logged)."""
        import hashlib
        from guardray.synth import fingerprint, generation_settings
        gen = generation_settings(cfg)
        policy = load_policy(cfg.policy)
        files = [*(cfg.data.seeds or policy.seeds), *cfg.data.extra_train]
        contents = [hashlib.sha256(Path(f).read_bytes()).hexdigest() if Path(f).is_file() else str(f) for f in files]
        pol = {k: v for k, v in policy.to_meta().items() if k != "path"}
        fps = {"classifier": fingerprint(cfg.run.seed, pol, contents, to_dict(cfg.data), to_dict(cfg.synth), gen,
                                         to_dict(cfg.curator), to_dict(cfg.trainer), to_dict(cfg.eval)),
               "attack": fingerprint(gen, to_dict(cfg.ppo), to_dict(cfg.attack))}
        old = self.data.get("fingerprints", {})
        steps = self.data["steps"]
        if old.get("classifier", fps["classifier"]) != fps["classifier"]:
            drop = [k for k in steps if k != "synth"]
        elif old.get("attack", fps["attack"]) != fps["attack"]:
            drop = [k for k in steps if k.startswith("round/") or (k.split("/")[0] in ("train", "eval")
                                                                   and k.split("/")[-1] != "0")]
        else:
            drop = []
        for k in drop:
            del steps[k]
        if drop:
            log(f"config changed since the last run of {self.path.parent.name}: redoing {', '.join(sorted(drop))}")
        self.data["fingerprints"] = fps
        self._write()
        return drop


class Stages:
    """Wall time per pipeline stage in this run (a stage resumed from an earlier run takes ~0 s):
    `with stages("train"): ...`; the report lists them (runs/NAME/report.md, "Stage times")."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.time()
        try:
            yield
        finally:
            self.add(name, t0)

    def add(self, name: str, since: float) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.time() - since, 1)


def log(msg: str) -> None:
    print(f"[guardray {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- the actors

@dataclass
class Actors:
    replicas: list  # GeneratorReplica handles (the policy's weights after each sync)
    learner: object  # PPOLearner handle
    scorer: object  # Scorer handle (rewards against the current classifier)


def build_actors(cfg: Config, classifier: str, policy: str = "", judge_seeds: list[Example] = ()) -> Actors:
    """Every actor of the adversarial phase. `policy`: a saved policy to resume from (its KL reference is then
    that policy too - resuming restarts the KL anchor; documented caveat)."""
    from guardray.generator import make_replicas
    from guardray.learner import PPOLearner
    from guardray.scorer import Scorer
    res = cfg.resources
    ppo = dataclasses.replace(cfg.ppo, policy_model=policy) if policy else cfg.ppo
    learner = PPOLearner.options(num_cpus=res.learner_cpus, num_gpus=res.learner_gpus,
                                 resources=res.ray_resources("learner")).remote(
        ppo, cfg.generator, cfg.run.seed, threads=res.learner_threads)
    replicas = make_replicas(cfg.generator, res, cfg.run.seed)
    opts = dict(num_cpus=res.scorer_cpus, num_gpus=res.scorer_gpus, resources=res.ray_resources("scorer"))
    validity_model = cfg.attack.validity_model or None
    scorer = Scorer.options(**opts).remote(classifier, cfg.attack, embedder=cfg.attack.embedder,
                                           validity_model=validity_model, judge_seeds=list(judge_seeds))
    actors = Actors(replicas, learner, scorer)
    sync_weights(actors)  # replicas start from exactly the learner's policy (and its version)
    return actors


# ---------------------------------------------------------------- the steps

def augment_and_curate(cfg: Config, seeds: list[Example], state: RunState) -> list[Example]:
    """Seeds -> query augmentation, paraphrasing, contrastive benign -> curation rounds (guardray.synth, which
    resumes per stage on its own)."""
    from guardray.synth import run_synth
    res = run_synth(cfg, seeds)
    state.put("synth", {"path": str(res.path), "n": len(res.examples)})
    return res.examples


JUDGE_SEEDS = "seeds"  # curator.judge_model / attack.validity_model: the pipeline's seeds-only judge


def seeds_judge(cfg: Config, prompts: list[Example], state: RunState) -> Config:
    """Train the seeds-only judge where the config asks for one (curator.judge_model=seeds: the curation judge
    round; attack.validity=reference with validity_model=seeds: the attack validity judge) and return the config
    with its path filled in. It fits the prompt seeds alone (curator.judge_epochs, the trainer's other settings,
    its own validation split of the seeds for its threshold), so it has never seen a synthetic child or an attack
    and it is never the attacked classifier. On the team's blind audit of 86 SmolLM2 paraphrases meant unsafe,
    the demo's judge kept 47 at 45% label accuracy where the k-NN vote kept 77 at 30%: 28 fewer wrong ones for
    2 fewer right ones (benchmarks/judge_audit.md)."""
    cur, att = cfg.curator, cfg.attack
    if cur.judge_model != JUDGE_SEEDS and not (att.validity == "reference" and att.validity_model == JUDGE_SEEDS):
        return cfg
    done = state.get("judge")
    if not done:
        from guardray.core.splits import split_validation
        from guardray.trainer import train_classifier
        fit, val = split_validation(prompts, cfg.data.val_fraction, cfg.run.seed, safe_share=cfg.data.val_safe_share)
        # best_f1: the judge's threshold is a label boundary (keep/relabel/drop with a margin on both sides), not
        # a deployment operating point, so it balances both errors (as in the audit of benchmarks/judge_audit.md)
        tcfg = dataclasses.replace(cfg.trainer, epochs=cur.judge_epochs, warm_start="", threshold_policy="best_f1")
        t0 = time.time()
        r = train_classifier(tcfg, fit, Path(cfg.run_dir) / "judge", resources=cfg.resources,
                             seed=cfg.run.seed + 17, val=val, policy=load_policy(cfg.policy))
        done = {"path": r.path, "threshold": r.threshold, "val": r.metrics, "n_fit": len(fit), "n_val": len(val),
                "seconds": round(time.time() - t0, 1)}
        state.put("judge", done)
        log(f"seeds-only judge: {len(fit)} prompt seeds, {cur.judge_epochs} epoch(s), val AUPRC "
            f"{r.metrics.get('val_auprc', float('nan')):.3f}, threshold {r.threshold:.3f} -> {r.path}")
    if cur.judge_model == JUDGE_SEEDS:
        cur = dataclasses.replace(cur, judge_model=done["path"])
    if att.validity_model == JUDGE_SEEDS:
        att = dataclasses.replace(att, validity_model=done["path"])
    return cfg.replace(curator=cur, attack=att)


def operate(cfg: Config, seeds: list[Example], state: RunState) -> list[Example]:
    """Label-preserving operators (noise, framings, benign padding, transcripts, code-switching; the prompt-attack
    frame labels unsafe) over a share of the seeds, safe and unsafe alike, so that no framing, length or format
    carries the label. Pure code in the controller (guardray.core.operators): thousands of texts per second.
    Children keep their seed as root, so the validation split keeps them beside it. A policy without a
    `jailbreak` code cannot label the prompt-attack frame's children (unsafe under the built-in policy only), so
    that operator is left out for it."""
    from collections import Counter
    from guardray.core.operators import OPERATORS, apply_operators
    s = cfg.synth
    policy = load_policy(cfg.policy)
    ops = [o for o in s.operators if not OPERATORS[o].makes_unsafe or "jailbreak" in policy.by_code]
    if len(ops) < len(s.operators):
        log(f"operators: {sorted(set(s.operators) - set(ops))} left out: they label their children `jailbreak`, "
            f"which policy {policy.name!r} does not have")
    if not (ops and s.operator_per_seed and s.operator_fraction):
        return []
    rnd = random.Random(f"{cfg.run.seed}:operate")
    picked = [e for e in seeds if rnd.random() < s.operator_fraction]
    kids = apply_operators(picked, ops=ops, per_example=s.operator_per_seed, seed=cfg.run.seed,
                           padding=load_padding(s.padding))
    write_examples(kids, Path(cfg.run_dir) / "data" / "operators.parquet")
    by_op = Counter(e.generator.removeprefix("op:") for e in kids)
    skipped = len(picked) * s.operator_per_seed - len(kids)
    state.put("operate", {"seeds": len(picked), "n": len(kids), "skipped_noop_or_too_long": skipped,
                          "by_operator": dict(sorted(by_op.items())),
                          "by_label": dict(Counter(e.label for e in kids))})
    log(f"operators: {len(picked)} seeds -> {len(kids)} children ({skipped} skipped: no change, or over 2,000 "
        f"characters); {dict(Counter(e.label for e in kids))}")
    return kids


def train(cfg: Config, examples: list[Example], round: int, warm_start: str, state: RunState, arm: str = "") -> dict:
    """Fine-tune the classifier with Ray Train; warm start from the previous round's checkpoint. `arm="-control"`:
    the no-attack control arm's checkpoint of that round (its own state key and folder)."""
    done = state.get(f"train/{round}{arm}")
    if done:
        return done
    from guardray.core.splits import split_validation
    from guardray.trainer import train_classifier
    tcfg = dataclasses.replace(cfg.trainer, warm_start=warm_start or cfg.trainer.warm_start)
    # one split for every round (split_seed fixed): no retrain validates on its past
    fit, val = split_validation(examples, cfg.data.val_fraction, cfg.run.seed, safe_share=cfg.data.val_safe_share)
    replay = {}
    if round > 0:
        tcfg = dataclasses.replace(tcfg, epochs=cfg.attack.retrain_epochs, lr=cfg.attack.retrain_lr or tcfg.lr)
        fit, replay = replay_set(fit, cfg.attack.replay, seed=cfg.run.seed * 7 + round)
    out = Path(cfg.run_dir) / "classifier" / f"round-{round}{arm}"
    r = train_classifier(tcfg, fit, out, resources=cfg.resources, seed=cfg.run.seed + round, val=val,
                         policy=load_policy(cfg.policy))
    write_examples(examples, Path(cfg.run_dir) / "data" / f"train-round-{round}{arm}.parquet")
    info = {"path": r.path, "threshold": r.threshold, "val": r.metrics, "n_train": len(examples),
            "n_fit": len(fit), **({"replay": replay} if replay else {})}
    state.put(f"train/{round}{arm}", info)
    return info


def replay_set(train: list[Example], replay: int, seed: int) -> tuple[list[Example], dict]:
    """What a warm-started retrain fits on: every adversarial example, plus `replay` earlier training examples
    drawn at random (stratified by label, so the replay keeps the training mix); replay=0 keeps them all. The seed
    depends on the round only, so the treatment and the control arm replay the same examples."""
    new = [e for e in train if e.stage == "adversarial"]
    old = [e for e in train if e.stage != "adversarial"]
    if not replay or replay >= len(old):
        return new + old, {"adversarial": len(new), "replayed": len(old), "of": len(old)}
    rng = random.Random(seed)
    picked, labels = [], sorted({e.label for e in old})
    for i, label in enumerate(labels):
        part = [e for e in old if e.label == label]
        k = replay - len(picked) if i == len(labels) - 1 else round(replay * len(part) / len(old))
        picked += rng.sample(part, min(k, len(part)))
    return new + picked, {"adversarial": len(new), "replayed": len(picked), "of": len(old)}


def check_capacity(cfg: Config) -> None:
    """The adversarial actors stay up while the classifier retrains, so both must fit at once; otherwise Ray
    Train waits for CPUs that never free up. Fail fast on a fixed (local) cluster, warn on a remote one (it may
    autoscale)."""
    if not cfg.attack.rounds:
        return
    r, g = cfg.resources, cfg.generator
    total = ray.cluster_resources()
    for kind, held, train_need in (
            ("CPU", g.replicas * r.generator_cpus + r.learner_cpus + r.scorer_cpus,
             cfg.trainer.num_workers * r.trainer_cpus_per_worker),
            ("GPU", g.replicas * r.generator_gpus + r.learner_gpus + r.scorer_gpus,
             cfg.trainer.num_workers * (r.trainer_gpus_per_worker or 1.0) if cfg.trainer.use_gpu else 0.0)):
        have = total.get(kind, 0.0)
        if held + train_need > have + 1e-9:
            low = "cpus" if kind == "CPU" else "gpus"
            msg = (f"resources: during the adversarial rounds the generator replicas, learner and scorer hold "
                   f"{held:g} {kind}s (generator.replicas x resources.generator_{low} + learner_{low} + "
                   f"scorer_{low}) and retraining asks for {train_need:g} more (trainer.num_workers x "
                   f"resources.trainer_{low}_per_worker), but the cluster has {have:g}: lower those, or add {kind}s")
            if cfg.run.ray_address or os.environ.get("RAY_ADDRESS"):
                log("WARNING: " + msg + " (continuing: a remote cluster may autoscale)")
            else:
                raise UsageError(msg)


def keep_classifier(cfg: Config, examples: list[Example], round: int, ckpt: dict, state: RunState) -> dict:
    """A round without harvested examples: the previous checkpoint is this round's, recorded as a train step is
    (state and the round's training set on disk), so resume and the report treat it like any round."""
    write_examples(examples, Path(cfg.run_dir) / "data" / f"train-round-{round}.parquet")
    info = {**ckpt, "n_train": len(examples), "retrained": False}
    state.put(f"train/{round}", info)
    return info


def evaluate(cfg: Config, ckpt: str, round: int | str, eval_sets: list[str], state: RunState) -> dict:
    """Score the checkpoint on every configured evaluation set at its calibrated threshold."""
    done = state.get(f"eval/{round}")
    if done is not None:
        return done
    out = {}
    if eval_sets:
        from guardray.evaluate import evaluate as run_eval
        rep = run_eval(ckpt, eval_sets, Path(cfg.run_dir) / "eval" / f"round-{round}",
                       threshold=cfg.eval.threshold, batch_size=cfg.eval.batch_size, plots=True)
        out = {name: {k: d.get(k) for k in ("n", "f1", "precision", "recall", "fpr", "auprc",
                                              "recall_at_1pct_fpr")}
               for name, d in rep["datasets"].items()}
    state.put(f"eval/{round}", out)
    return out


def rollout(actors: Actors, seeds: list[Example], cfg: Config, round: int, tag: str, seed: int) -> list[Rollout]:
    """Sample one rewrite per seed from the current policy, fanned out over the replicas."""
    reqs = attack_requests(seeds, temperature=cfg.ppo.temperature, max_new_tokens=cfg.ppo.max_new_tokens,
                           seed=seed, round=round, styles=cfg.attack.styles)
    reqs = [r.__class__(**{**asdict(r), "prompt_id": f"{r.prompt_id}{tag}"}) for r in reqs]
    k = len(actors.replicas)
    refs = [g.generate.remote(reqs[i::k]) for i, g in enumerate(actors.replicas)]
    gens = [x for part in ray.get(refs) for x in part]
    return make_rollouts(seeds, reqs, gens)


def score(scorer, rollouts: list[Rollout]):
    """-> ObjectRef[RewardBatch] (handed to the learner as a ref: it never passes through the driver)."""
    return scorer.score.remote(rollouts)


def ppo_update(actors: Actors, rollouts: list[Rollout], rewards_ref) -> dict:
    return ray.get(actors.learner.update.remote(rollouts, rewards_ref))


def sync_weights(actors: Actors) -> int:
    """Put the learner's policy weights once and load them into every replica; returns the new version."""
    [weights_ref] = ray.get(actors.learner.weights_ref.remote())
    version = ray.get(actors.learner.version.remote())
    got = ray.get([g.load_weights.remote(weights_ref, version) for g in actors.replicas])
    if any(v != version for v in got):
        raise RuntimeError(f"weight sync failed: replicas report versions {got}, learner {version}")
    return version


def harvest(rollouts: list[Rollout], rewards: list[RewardBatch], round: int, limit: int) -> list[Example]:
    """Successful adversarial rewrites -> Examples with the seed's label and full provenance."""
    out, seen = [], set()
    for batch, rb in zip(rollouts, rewards):
        for ro, ok in zip(batch, rb.components["success"]):
            text = ro.generation.text.strip()
            if ok >= 0.5 and text and text not in seen:
                seen.add(text)
                out.append(ro.seed.derive(
                    id=f"adv-r{round}-{len(out):05d}-{ro.seed.id}", text=text, stage="adversarial", round=round,
                    generator=f"{ro.generation.generator}@v{ro.policy_version}", source="adversarial"))
    return out[:limit] if limit else out


def curate(cfg: Config, examples: list[Example], pool_so_far: list[Example], round: int) -> list[Example]:
    """The harvest through a CuratorPool (rules, dedup against everything trained on so far and the eval sets,
    judge, select); the pool lives only for this call so its CPUs are free for training."""
    if not examples:
        return []
    from guardray.curator import CuratorPool
    with CuratorPool(cfg.curator, cfg.resources, reference_texts=[e.text for e in pool_so_far],
                     judge_model=cfg.curator.judge_model, decontam_texts=decontam_texts(cfg),
                     label_reference=single_prompts(e for e in pool_so_far if e.stage == "seed"),
                     policy=load_policy(cfg.policy)) as pool:
        res = pool.curate(examples, stage="adversarial", round=round)
    path = Path(cfg.run_dir) / "adversarial" / f"round-{round}"
    path.mkdir(parents=True, exist_ok=True)
    (path / "curation.json").write_text(json.dumps(res.report, indent=1, default=str))
    return res.kept


def asr(rb: RewardBatch) -> float | None:
    s = rb.components["success"]
    return float(np.mean(s)) if len(s) else None


def by_style(actors: Actors, rollouts: list[Rollout], rb: RewardBatch) -> dict:
    """Per attack style: how many, ASR, and diversity (distinct bigrams, embedding spread) of the rewrites."""
    styles = [attack_style(r.generation.prompt_id) for r in rollouts]
    succ = np.asarray(rb.components["success"])
    groups = {st: [r.generation.text for r, s in zip(rollouts, styles) if s == st] for st in sorted(set(styles))}
    spread = ray.get(actors.scorer.spread.remote(groups))
    out = {}
    for st, texts in groups.items():
        m = np.array([s == st for s in styles])
        out[st] = {"n": int(m.sum()), "asr": float(succ[m].mean()), "distinct_2": distinct_n(texts, 2),
                   "spread": spread[st]}
    return out


def asr_detail(rollouts: list[Rollout], rb: RewardBatch) -> dict:
    """ASR with its 95% Wilson interval, overall and per label / primary category of the seed; also the share of
    seeds the classifier got right (only those can be attacked successfully)."""
    from guardray.core.metrics import wilson_interval
    succ = np.asarray(rb.components["success"])
    ok = np.asarray(rb.components.get("seed_correct", np.ones(len(succ))))

    def cell(mask) -> dict:
        n = int(mask.sum())
        k = float(succ[mask].sum())
        return {"n": n, "asr": k / n if n else None, "ci95": wilson_interval(k, n),
                "seed_correct": float(ok[mask].mean()) if n else None}
    keys = np.array([(r.seed.categories[0] if r.seed.unsafe and r.seed.categories else r.seed.label)
                     for r in rollouts])
    labels = np.array([r.seed.label for r in rollouts])
    return {**cell(np.ones(len(succ), bool)), "by_label": {k: cell(labels == k) for k in sorted(set(labels))},
            "by_category": {k: cell(keys == k) for k in sorted(set(keys))}}


def flips(rb: RewardBatch) -> RewardBatch:
    """`rb` with success = the classifier got the seed right and the rewrite wrong, without the meaning band and
    the validity judge: the static suite's operators keep meaning and label by construction, so every such flip is
    a real error (and the gates, a MiniLM embedding and a MiniLM judge, share the attacked MiniLM's blind spots:
    on the demo they rejected almost every leetspeak flip)."""
    c = rb.components
    ok = c.get("seed_correct", (1.0,) * len(c["fooled"]))
    return RewardBatch(rb.rewards, {**c, "success": tuple(f * o for f, o in zip(c["fooled"], ok))},
                       rb.policy_version)


def static_detail(static: list[Rollout], before: RewardBatch, after: RewardBatch) -> dict:
    """The static suite before and after the round's retrain: ASR by the RL attacker's full success test, and the
    flip rate (seed right, child wrong; `flips`), with intervals and per label / category; per operator before the
    retrain."""
    ops = np.array([static_operator(r.generation.prompt_id) for r in static])
    succ = np.asarray(before.components["success"])
    flip = np.asarray(flips(before).components["success"])
    return {"before": asr_detail(static, before), "after": asr_detail(static, after),
            "flipped_before": asr_detail(static, flips(before)), "flipped_after": asr_detail(static, flips(after)),
            "by_operator": {op: {"n": int((ops == op).sum()), "asr": float(succ[ops == op].mean()),
                                 "flipped": float(flip[ops == op].mean())} for op in sorted(set(ops.tolist()))}}


# ---------------------------------------------------------------- the controller

def run_pipeline(cfg: Config) -> dict:
    from guardray.data import load_seeds
    from guardray.ray_utils import init_ray
    t0 = time.time()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    state = RunState(run_dir)
    eval_sets = resolve_eval_sets(cfg)
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, eval_sets=tuple(eval_sets)))
    state.check_config(cfg)
    init_ray(cfg.run.ray_address)
    check_capacity(cfg)
    seeds = load_seeds(cfg.data.seeds, skip_bad=cfg.data.skip_bad_rows, policy=load_policy(cfg.policy))
    extra = read_many(cfg.data.extra_train, skip_bad=cfg.data.skip_bad_rows, codes=load_policy(cfg.policy).codes
                      ).examples if cfg.data.extra_train else []
    # single-message prompt seeds feed the generator, the operators and the attacker; response seeds (role
    # assistant: a reply to a prompt) and multi-turn conversations train as they are
    prompts = single_prompts(seeds)
    attack_pool, eval_pool = split_attack_seeds(prompts, cfg)
    seen = attackable(prompts, dataclasses.replace(cfg, attack=dataclasses.replace(cfg.attack, max_seed_chars=0)))
    attack_seeds = {"n": len(attack_pool) + len(eval_pool), "max_chars": cfg.attack.max_seed_chars,
                    "too_long": len(seen) - len(attack_pool) - len(eval_pool)}
    n_resp = sum(e.role == "assistant" for e in seeds)
    log(f"{len(prompts)} prompt seeds, {n_resp} response seeds, {len(seeds) - len(prompts) - n_resp} "
        f"conversation seeds, {len(extra)} extra examples, eval sets: {[Path(p).name for p in eval_sets] or 'none'}")
    if attack_seeds["too_long"]:
        log(f"attacker: {attack_seeds['n']} seeds of up to {cfg.attack.max_seed_chars} characters; "
            f"{attack_seeds['too_long']} longer ones left out (attack.max_seed_chars)")

    stages = Stages()
    with stages("seeds-only judge"):
        cfg = seeds_judge(cfg, prompts, state)                                          # seeds-only judge
    with stages("synthetic data (generate + curate)"):
        synthetic = augment_and_curate(cfg, prompts, state)                             # augment + curate
    with stages("operators"):
        operated = operate(cfg, prompts, state)                                         # operators
    train_set = seeds + extra + operated + synthetic
    with stages("round 0: train"):
        ckpt = train(cfg, train_set, 0, "", state)                                      # train (round 0)
    with stages("evaluations"):
        ev0 = evaluate(cfg, ckpt["path"], 0, eval_sets, state)                          # evaluate
    rounds = [{"round": 0, "n_train": len(train_set), "val": ckpt["val"], "eval": ev0}]
    finished = [r for r in range(1, cfg.attack.rounds + 1) if state.get(f"round/{r}")]
    control, base_set = ckpt, train_set  # the no-attack arm: same warm starts and epochs, no harvested data
    for r in finished:                                                                  # resume
        rounds.append(state.get(f"round/{r}"))
        ckpt = state.get(f"train/{r}")
        control = state.get(f"train/{r}-control") or control
    if len(finished) == cfg.attack.rounds:
        return export(cfg, rounds, ckpt, time.time() - t0, stages.seconds, attack_seeds)
    train_set = read_many([Path(cfg.run_dir) / "data" / f"train-round-{max(finished)}.parquet"]).examples \
        if finished else train_set
    attack_pool = trainable_seeds(cfg, attack_pool, base_set)
    static = static_attacks(eval_pool, ops=cfg.synth.operators, per_seed=cfg.attack.static_per_seed,
                            seed=cfg.run.seed + 4_099)  # the same fixed perturbations every round and in both arms
    with stages("adversarial: start actors"):
        actors = build_actors(cfg, ckpt["path"], policy=last_policy(cfg, state), judge_seeds=prompts)
    for r in range(max(finished, default=0) + 1, cfg.attack.rounds + 1):
        batches, rbs, stats = [], [], []
        t_ppo = time.time()
        for u in range(cfg.ppo.updates_per_round):
            seeds_u = random.Random(cfg.run.seed * 7919 + r * 101 + u).sample(
                attack_pool, min(cfg.ppo.rollouts_per_update, len(attack_pool)))
            ro = rollout(actors, seeds_u, cfg, r, f"u{u}", cfg.run.seed + 1000 * r + u)       # rollout
            rb_ref = score(actors.scorer, ro)                                            # score
            stats.append(ppo_update(actors, ro, rb_ref))                                 # ppo_update
            sync_weights(actors)                                                         # sync_weights
            batches.append(ro), rbs.append(ray.get(rb_ref))
            stats[-1].update(distinct_2=distinct_n([x.generation.text for x in ro], 2),  # collapse watch
                             novelty=float(np.mean(rbs[-1].components["novelty"])),
                             success=asr(rbs[-1]))
            log(f"round {r} update {u + 1}/{cfg.ppo.updates_per_round}: reward {stats[-1]['mean_reward']:.3f} "
                f"kl {stats[-1]['kl']:.4f} success {asr(rbs[-1]):.2f}")
        stages.add("adversarial: PPO updates (rollout, score, update, sync)", t_ppo)
        t_attacks = time.time()
        fresh = rollout(actors, eval_pool, cfg, r, "eval", cfg.run.seed + 999_983 * r)       # fresh attacks
        before = ray.get(score(actors.scorer, fresh))
        static_before = ray.get(score(actors.scorer, static)) if static else None
        # the ASR measurement (held-out seeds) is never harvested: the retrained classifier is measured on
        # attacks it has not seen; harvest comes from the update batches and fresh attacks on the training seeds
        pool_r = random.Random(cfg.run.seed * 31 + r).sample(attack_pool, min(cfg.attack.harvest_attacks,
                                                                              len(attack_pool)))
        extra = rollout(actors, pool_r, cfg, r, "harvest", cfg.run.seed + 7_919 * r) if pool_r else []
        extra_rb = ray.get(score(actors.scorer, extra)) if extra else None
        harvested = harvest(batches + ([extra] if extra else []), rbs + ([extra_rb] if extra else []), r,
                            cfg.attack.harvest_max)                                            # harvest
        curated = curate(cfg, harvested, train_set, r)                                     # curate
        stages.add("adversarial: fresh attacks, harvest, curation", t_attacks)
        train_set = train_set + curated
        if curated:
            with stages("adversarial: retrain"):
                ckpt = train(cfg, train_set, r, ckpt["path"], state)                      # train (warm start)
            ray.get([actors.scorer.set_classifier.remote(ckpt["path"]),
                     actors.scorer.record_successes.remote([e.text for e in curated])])
            after = ray.get(score(actors.scorer, fresh))
            static_after = ray.get(score(actors.scorer, static)) if static else None
            with stages("evaluations"):
                ev = evaluate(cfg, ckpt["path"], r, eval_sets, state)                      # evaluate
            if cfg.attack.control:                                                       # control arm
                with stages("adversarial: control retrain"):
                    control = train(cfg, base_set, r, control["path"], state, arm="-control")
                ctl_after = ray.get(actors.scorer.score_against.remote(control["path"], fresh))
                ctl_static = ray.get(actors.scorer.score_against.remote(control["path"], static)) if static else None
                with stages("evaluations"):
                    ctl_ev = evaluate(cfg, control["path"], f"{r}-control", eval_sets, state)
                ctl = {"path": control["path"], "asr_after": asr_detail(fresh, ctl_after),
                       "static_after": asr_detail(static, ctl_static) if static else None,
                       "static_flipped_after": asr_detail(static, flips(ctl_static)) if static else None,
                       "val": control["val"], "eval": ctl_ev}
        else:  # no new example: retraining on unchanged data would only add an epoch; the classifier stays
            log(f"round {r}: no adversarial example harvested; keeping {ckpt['path']}")
            ckpt = keep_classifier(cfg, train_set, r, ckpt, state)
            after, static_after, ev = before, static_before, rounds[-1]["eval"]
        if not (curated and cfg.attack.control):
            ctl = None
        rec = {"round": r, "asr_before_retrain": asr(before), "asr_after_retrain": asr(after),
               "control": ctl,
               "asr_before": asr_detail(fresh, before), "asr_after": asr_detail(fresh, after),
               "by_style": by_style(actors, fresh, before),
               "static": static_detail(static, static_before, static_after) if static else None,
               "harvested": len(harvested), "curated": len(curated), "n_train": len(train_set),
               "retrained": bool(curated), "retrain": {"n_fit": ckpt.get("n_fit"), "replay": ckpt.get("replay"),
                                                       "lr": cfg.attack.retrain_lr or cfg.trainer.lr,
                                                       "epochs": cfg.attack.retrain_epochs} if curated else None,
               "ppo": stats, "reward_components": mean_components(rbs),
               "val": ckpt["val"], "eval": ev, "samples": success_samples(fresh, before)}
        save_policy(actors, cfg, r)
        state.put(f"round/{r}", rec)
        rounds.append(rec)
        log(f"round {r}: ASR {rec['asr_before_retrain']:.2f} -> {rec['asr_after_retrain']:.2f} after retraining, "
            f"{len(curated)} adversarial examples added")
    release(actors)
    return export(cfg, rounds, ckpt, time.time() - t0, stages.seconds, attack_seeds)


# ---------------------------------------------------------------- helpers of the controller

def release(actors: Actors) -> None:
    """Free the adversarial phase's CPUs/GPUs (the run's outputs are on disk by now)."""
    for a in [actors.learner, actors.scorer, *actors.replicas]:
        ray.kill(a, no_restart=True)


def resolve_eval_sets(cfg: Config) -> list[str]:
    """Evaluation files/folders; a missing one is an error unless data.missing_eval=skip (then said loudly)."""
    out = []
    for p in cfg.data.eval_sets:
        path = Path(p)
        f = path / "eval.jsonl" if path.is_dir() else path
        if f.exists():
            out.append(str(path))
        elif cfg.data.missing_eval == "skip":
            log(f"evaluation set {p} not found: skipped (data.missing_eval=skip)")
        else:
            raise UsageError(f"data.eval_sets: {p} not found; fix the path, or set data.missing_eval=skip")
    return out


def decontam_texts(cfg: Config) -> list[str]:
    """Texts synthetic and adversarial data must not near-duplicate: data.decontaminate plus the eval sets."""
    paths = [str(Path(p) / "eval.jsonl") if Path(p).is_dir() else p
             for p in list(cfg.data.decontaminate) + resolve_eval_sets(cfg)]
    texts = []
    for p in paths:
        if Path(p).exists():
            texts += [e.text for e in read_many([p], strict_categories=False, skip_bad=True,
                                                allow_duplicate_ids=True).examples]
    return texts


def trainable_seeds(cfg: Config, pool: list[Example], round0_set: list[Example]) -> list[Example]:
    """The seeds of `pool` outside the classifier's validation split (the fixed split of the round-0 training set
    that every retrain validates on). A rewrite of a validation seed joins its seed's group, so it would validate
    and never train: in the demo before this, a round's only harvested example did that and its retrain fit 0
    adversarial examples. The policy's updates and the harvest therefore attack only seeds it can train on."""
    from guardray.core.splits import split_validation
    _, val = split_validation(round0_set, cfg.data.val_fraction, cfg.run.seed, safe_share=cfg.data.val_safe_share)
    held = {e.seed_id or e.id for e in val}
    return [s for s in pool if (s.seed_id or s.id) not in held]


def attackable(seeds: list[Example], cfg: Config) -> list[Example]:
    """The seeds the attacker rewrites: unsafe ones (and safe ones unless attack.attack_safe is off), up to
    attack.max_seed_chars characters (0 = any length)."""
    cap = cfg.attack.max_seed_chars
    return [s for s in seeds if (s.unsafe or cfg.attack.attack_safe) and (not cap or len(s.text) <= cap)]


def split_attack_seeds(seeds: list[Example], cfg: Config) -> tuple[list[Example], list[Example]]:
    """Seeds the policy trains on vs held-out seeds for measuring ASR with fresh attacks (both label-mixed)."""
    rng = random.Random(cfg.run.seed)
    pool = attackable(seeds, cfg)
    rng.shuffle(pool)
    n_eval = min(cfg.attack.eval_attacks, len(pool) // 2)
    return pool[n_eval:], pool[:n_eval]


def save_policy(actors: Actors, cfg: Config, round: int) -> str:
    path = Path(cfg.run_dir) / "policy" / f"round-{round}"
    return ray.get(actors.learner.save.remote(str(path)))


def last_policy(cfg: Config, state: RunState) -> str:
    done = [r for r in range(1, cfg.attack.rounds + 1) if state.get(f"round/{r}")]
    p = Path(cfg.run_dir) / "policy" / f"round-{max(done)}" if done else None
    return str(p) if p and (p / "config.json").exists() else ""


def mean_components(rbs: list[RewardBatch]) -> dict:
    keys = rbs[0].components.keys() if rbs else []
    return {k: float(np.mean(np.concatenate([np.asarray(rb.components[k]) for rb in rbs]))) for k in keys}


def success_samples(rollouts: list[Rollout], rb: RewardBatch, k: int = 5) -> list[dict]:
    out = []
    for ro, ok, s in zip(rollouts, rb.components["success"], rb.components["classifier_score"]):
        if ok >= 0.5 and len(out) < k:
            out.append({"seed": ro.seed.text, "label": ro.seed.label, "attack": ro.generation.text.strip(),
                        "unsafe_score": round(float(s), 3)})
    return out


def export(cfg: Config, rounds: list[dict], ckpt: dict, seconds: float, stage_seconds: dict | None = None,
           attack_seeds: dict | None = None) -> dict:
    """report.json, report.md and plots (ASR and F1 by round) in runs/NAME/. `attack_seeds`: how many seeds the
    attacker could rewrite, and how many attack.max_seed_chars left out."""
    from guardray.report import write_pipeline_report
    report = {"run": cfg.run.name, "final_checkpoint": ckpt["path"], "threshold": ckpt["threshold"],
              "seconds": round(seconds, 1), "stage_seconds": dict(stage_seconds or {}), "rounds": rounds,
              "choices": {"reward": "guardray.core.adversarial (our formula)",
                          "asr": "fresh attacks on held-out seeds, before and after retraining",
                          "validity": cfg.attack.validity, "validity_model": cfg.attack.validity_model,
                          "curation_judge": cfg.curator.judge_model if cfg.curator.judge != "none" else "",
                          "generator": f"{cfg.generator.model} ({cfg.generator.backend})",
                          "similarity_tau": cfg.attack.similarity_tau,
                          "attack_seeds": dict(attack_seeds or {}, max_new_tokens=cfg.ppo.max_new_tokens)}}
    write_pipeline_report(report, Path(cfg.run_dir))
    log(f"done in {seconds / 60:.1f} min: {Path(cfg.run_dir) / 'report.md'}")
    return report


def run_attack(cfg: Config, classifier: str) -> dict:
    """One adversarial phase against `classifier`: PPO updates, then fresh attacks; writes successes (no retrain)."""
    from guardray.data import load_seeds
    from guardray.ray_utils import init_ray
    from guardray.classifier import META_FILE
    from guardray.errors import UsageError
    from guardray.models import resolve
    path = resolve(classifier)  # a missing model fails here, with the fix named, before any actor starts
    if not (Path(path) / META_FILE).exists():
        raise UsageError(f"--classifier {classifier}: {path} is not a guardray checkpoint (no {META_FILE}); pass "
                         f"a folder written by `guardray train` or a run's classifier/round-N")
    seeds = load_seeds(cfg.data.seeds, skip_bad=cfg.data.skip_bad_rows, policy=load_policy(cfg.policy))
    seeds = single_prompts(seeds)  # attacks rewrite single prompts
    attack_pool, eval_pool = split_attack_seeds(seeds, cfg)
    init_ray(cfg.run.ray_address)
    cfg = seeds_judge(cfg, seeds, RunState(Path(cfg.run_dir)))  # validity_model=seeds: trained (or reused) here
    actors = build_actors(cfg, path, judge_seeds=seeds)
    rbs, batches, stats = [], [], []
    for u in range(cfg.ppo.updates_per_round):
        seeds_u = random.Random(cfg.run.seed + u).sample(attack_pool, min(cfg.ppo.rollouts_per_update,
                                                                           len(attack_pool)))
        ro = rollout(actors, seeds_u, cfg, 1, f"u{u}", cfg.run.seed + u)
        rb_ref = score(actors.scorer, ro)
        stats.append(ppo_update(actors, ro, rb_ref))
        sync_weights(actors)
        batches.append(ro), rbs.append(ray.get(rb_ref))
        log(f"update {u + 1}: reward {stats[-1]['mean_reward']:.3f} success {asr(rbs[-1]):.2f}")
    fresh = rollout(actors, eval_pool, cfg, 1, "eval", cfg.run.seed + 999_983)
    rb = ray.get(score(actors.scorer, fresh))
    found = harvest(batches + [fresh], rbs + [rb], 1, 0)
    out = Path(cfg.run_dir) / "attack"
    write_examples(found, out / "successes.jsonl") if found else None
    rep = {"classifier": classifier, "asr": asr(rb), "successes": len(found), "ppo": stats,
           "reward_components": mean_components(rbs + [rb]), "samples": success_samples(fresh, rb)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "attack.json").write_text(json.dumps(rep, indent=2))
    release(actors)
    log(f"ASR {rep['asr']:.2f} on {len(fresh)} fresh attacks; {len(found)} successes in {out}")
    return rep


def cli(argv: list[str], cmd: str = "run") -> int:
    p = argparse.ArgumentParser(prog=f"guardray {cmd}", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="configs/*.yaml")
    if cmd == "attack":
        p.add_argument("--classifier", required=True, help="guardray checkpoint to attack")
    p.add_argument("overrides", nargs="*", help="dotted.key=value")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if cmd == "attack":
        run_attack(cfg, args.classifier)
    else:
        run_pipeline(cfg)
    return 0
