"""Job: evaluate a model on the config's evaluation sets in an `Evaluator` actor (the same `evaluate()` as
`guardray eval`); writes report.json, report.md and plots to <run.out_dir>/<run.name>/eval.

    python jobs/eval.py CONFIG [key=value ...]

Laptop (a local Ray is started when none runs):

    python jobs/eval.py configs/default.yaml eval.model=baseline:tfidf-lr \\
        "data.eval_sets=[$PWD/../shared/data/xstest]"

Cluster (Ray 2.60: `ray start` enables token auth, so export RAY_AUTH_MODE=token, or start the cluster with
RAY_AUTH_MODE=disabled on a trusted single machine). The working dir is uploaded to a temporary folder, so give
absolute paths for the model, the data and run.out_dir (shared storage on a multi-node cluster):

    ray job submit --working-dir . -- python jobs/eval.py configs/default.yaml \\
        eval.model=/mnt/runs/demo/checkpoint "data.eval_sets=[/mnt/data/xstest]" run.out_dir=/mnt/runs \\
        resources.scorer_gpus=1

The actor gets resources.scorer_cpus / resources.scorer_gpus (evaluation is scoring work). Exit code 0 on success,
2 on a configuration or data error, non-zero on any other failure.
"""
from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    import ray
    from guardray.core.config import ConfigError, load_config
    from guardray.evaluate import Evaluator, summary_table
    from guardray.ray_utils import init_ray

    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 2
    cfg = load_config(argv[0], argv[1:])
    if not cfg.eval.model:
        raise ConfigError("eval.model: not set; pass e.g. eval.model=baseline:tfidf-lr or a checkpoint path")
    if not cfg.data.eval_sets:
        raise ConfigError("data.eval_sets: empty; pass e.g. data.eval_sets=[/abs/path/shared/data/xstest]")
    # The actor's working directory may differ from ours: hand it absolute paths.
    data = [str(Path(p).resolve()) for p in cfg.data.eval_sets]
    model = cfg.eval.model
    if not model.startswith("baseline:") and Path(model).exists():
        model = str(Path(model).resolve())
    train = str(Path(cfg.eval.train_file).resolve()) if cfg.eval.train_file else None
    out = (cfg.run_dir / "eval").resolve()
    init_ray(cfg.run.ray_address)
    ev = Evaluator.options(num_cpus=cfg.resources.scorer_cpus, num_gpus=cfg.resources.scorer_gpus).remote(cfg.eval)
    report = ray.get(ev.evaluate.remote(model, data, str(out), train_file=train))
    print(f"model: {report['description']}\nthreshold: {report['threshold']:.4f}\n")
    print(summary_table(report))
    print(f"\nwrote {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    from guardray.errors import run_cli
    sys.exit(run_cli(lambda: main(sys.argv[1:])))
