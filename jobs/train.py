"""Job: train the guardrail classifier with Ray Train (the same `run_train` as `guardray train`); writes the HF
checkpoint (safetensors, guardray.json, README.md model card) to <run.out_dir>/<run.name>/classifier.

    python jobs/train.py CONFIG [key=value ...]

Laptop (a local Ray is started when none runs):

    python jobs/train.py configs/train.yaml
    ray start --head --node-ip-address 127.0.0.1 && RAY_AUTH_MODE=token \\
        ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/train.py configs/train.yaml

Cluster (Ray 2.60: `ray start` enables token auth, so export RAY_AUTH_MODE=token, or start the cluster with
RAY_AUTH_MODE=disabled on a trusted single machine). The working dir is uploaded to a temporary folder, so give an
absolute run.out_dir (shared storage on a multi-node cluster: Ray Train checkpoints go beside the output) and
absolute data paths:

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/train.py \\
        configs/train.yaml run.out_dir=/mnt/runs "data.extra_train=[/mnt/data/curated.parquet]" \\
        trainer.model=/mnt/models/my-encoder trainer.use_gpu=true trainer.num_workers=4 \\
        resources.trainer_gpus_per_worker=1

Re-submitting the same job after a failure resumes the Ray Train run from its last epoch. Exit code 0 on success,
2 on a configuration or data error, non-zero on any other failure.
"""
from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from guardray.core.config import load_config
    from guardray.trainer import run_train
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 2
    r = run_train(load_config(argv[0], argv[1:]))
    print(f"wrote {r.path} (threshold {r.threshold:.4f}, val F1 {r.metrics.get('val_f1', float('nan')):.4f})")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    from guardray.errors import run_cli
    sys.exit(run_cli(lambda: main(sys.argv[1:])))
