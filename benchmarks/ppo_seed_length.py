"""PPO update time with and without `attack.max_seed_chars`: the real adversarial actors of a finished run (vLLM or
hf replicas, the PPOLearner, the Scorer with the run's seeds-only judge), the same policy, updates interleaved.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ppo_seed_length.py --run runs/demo [--cap 400] [--repeats 2]

Each repeat samples `ppo.rollouts_per_update` attack seeds from all attackable seeds and from those up to `--cap`
characters, rolls them out, scores them and times one PPO update on each batch (weights synced after every update,
so each update is on-policy). Prints the padded prompt + completion tokens per rollout and the seconds per update.
"""
from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/demo", help="a finished pipeline run (its config, judge and round-0)")
    ap.add_argument("--cap", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    import ray

    from guardray import pipeline as P
    from guardray.core.config import load_config
    from guardray.core.taxonomy import load_policy
    from guardray.data import load_seeds, single_prompts
    from guardray.ray_utils import init_ray
    run = Path(args.run)
    cfg = load_config(run / "config.yaml")
    every = dataclasses.replace(cfg, attack=dataclasses.replace(cfg.attack, max_seed_chars=0))
    seeds = single_prompts(load_seeds(cfg.data.seeds, skip_bad=cfg.data.skip_bad_rows, policy=load_policy(cfg.policy)))
    pools = {"all": P.split_attack_seeds(seeds, every)[0],
             f"<= {args.cap} chars": [s for s in P.split_attack_seeds(seeds, every)[0] if len(s.text) <= args.cap]}
    init_ray(cfg.run.ray_address)
    cfg = P.seeds_judge(cfg, seeds, P.RunState(run))  # reuses the run's judge
    actors = P.build_actors(cfg, str(run / "classifier" / "round-0"), judge_seeds=seeds)
    n = cfg.ppo.rollouts_per_update
    print(f"attack seeds: {', '.join(f'{k} {len(v)}' for k, v in pools.items())}; {n} rollouts per update")
    times: dict[str, list[float]] = {k: [] for k in pools}
    for rep in range(args.repeats):
        for name, pool in pools.items():
            ro = P.rollout(actors, random.Random(10 + rep).sample(pool, n), cfg, 1, f"b{rep}{len(times[name])}",
                           100 + rep)
            rb = ray.get(P.score(actors.scorer, ro))
            t0 = time.perf_counter()
            P.ppo_update(actors, ro, ray.put(rb))
            times[name].append(time.perf_counter() - t0)
            P.sync_weights(actors)
            lens = [len(r.generation.prompt_token_ids) + len(r.generation.token_ids) for r in ro]
            print(f"{name}: tokens per rollout max {max(lens)} mean {sum(lens) / len(lens):.0f}; "
                  f"update {times[name][-1]:.1f} s", flush=True)
    P.release(actors)
    print("\n| attack seeds | PPO update seconds |\n|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {' / '.join(f'{t:.1f}' for t in ts)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
