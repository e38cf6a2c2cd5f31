"""Job: Ray Tune (ASHA) search over the classifier trainer (the same `run_tune` as `guardray tune`); writes
<run.out_dir>/<run.name>/tune/best.yaml (a config `guardray train --config` accepts) and trials.json.

    python jobs/tune.py CONFIG [key=value ...]

Laptop (a local Ray is started when none runs):

    python jobs/tune.py configs/tune.yaml
    ray start --head --node-ip-address 127.0.0.1 && RAY_AUTH_MODE=token \\
        ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/tune.py configs/tune.yaml

Cluster (RAY_AUTH_MODE=token as for every `ray job submit` on Ray 2.60; absolute run.out_dir on shared storage,
because the working dir is uploaded to a temporary folder):

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/tune.py \\
        configs/tune.yaml run.out_dir=/mnt/runs tune.num_samples=16 tune.max_concurrent=4 \\
        trainer.use_gpu=true resources.trainer_gpus_per_worker=1

Exit code 0 on success, 2 on a configuration or data error, non-zero on any other failure.
"""
from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from guardray.core.config import load_config
    from guardray.trainer import load_training_data
    from guardray.tune import run_tune
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 2
    cfg = load_config(argv[0], argv[1:])
    s = run_tune(cfg, load_training_data(cfg), cfg.run_dir / "tune")
    print(f"best {s['metric']}={s['best_metrics'].get(s['metric'])} with {s['best_params']}")
    print(f"train the final model with: guardray train --config {s['best_config_path']}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    from guardray.errors import run_cli
    sys.exit(run_cli(lambda: main(sys.argv[1:])))
