"""Job: the synth stage (seeds -> augmentation, paraphrasing, contrastive -> curation) on Ray; the same
`run_synth()` as `guardray synth`. Writes runs/NAME/synth/v{round}/ (Parquet per stage + curation.json) and resumes
finished stages.

    python jobs/synth.py CONFIG [key=value ...]

Laptop (a local Ray is started when none runs):

    python jobs/synth.py configs/demo.yaml
    ray job submit --working-dir . -- python jobs/synth.py configs/demo.yaml

Cluster (Ray 2.60: `ray start` enables token auth, so export RAY_AUTH_MODE=token, or start the cluster with
RAY_AUTH_MODE=disabled on a trusted single machine). The working dir is uploaded to a temporary folder, so give an
absolute run.out_dir on shared storage:

    RAY_AUTH_MODE=token ray job submit --working-dir . -- python jobs/synth.py configs/demo.yaml \\
        generator.backend=vllm generator.model=/mnt/models/Qwen2.5-1.5B-Instruct generator.replicas=4 \\
        resources.generator_gpus=1 curator.workers=8 run.out_dir=/mnt/runs

Exit code 0 on success, 2 on a configuration or data error, non-zero on any other failure.
"""
from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from guardray.core.config import load_config
    from guardray.synth import run_synth

    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 2
    round_ = 0
    overrides = []
    for a in argv[1:]:
        if a.startswith("round="):  # dataset version (synth/v{round}); not a config field
            round_ = int(a.split("=", 1)[1])
        else:
            overrides.append(a)
    cfg = load_config(argv[0], overrides)
    res = run_synth(cfg, round=round_)
    print(f"synth: {len(res.examples)} curated examples in {res.path}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from guardray.errors import run_cli
    sys.exit(run_cli(lambda: main(sys.argv[1:])))
