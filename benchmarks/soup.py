"""Weight soup (Wortsman et al. 2022, "Model soups") against its ingredients: the same training data and validation
split, torch seeds 0..k-1, the encoder and head weights averaged uniformly into one checkpoint (one model's serving
cost), threshold recalibrated on the validation split with the run's policy. Also the ensemble (mean of the k
models' scores, k times the serving cost) as the soup's ceiling.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/soup.py --run runs/demo --seeds 1 2 --out runs/soup
    # then, once, the evaluation sets (never used to choose):
    for c in runs/demo/classifier/round-0 runs/soup/seed-1 runs/soup/seed-2 runs/soup/soup; do
        HF_HUB_OFFLINE=1 .venv/bin/guardray eval --model $c --data ../shared/data/openai-moderation \\
            ../shared/data/xstest --out runs/soup/eval-$(basename $c) --no-plots; done

Ingredient 0 is the run's round-0 checkpoint (trained by the pipeline with `run.seed`); the others are trained here
by `guardray.trainer.train_classifier` on the run's data/train-round-0.parquet with `seed=s` and the run's split seed,
so every ingredient validates on the same held-out seeds and never trains on them. Prints validation AUPRC / F1 /
FPR per ingredient, for the soup and for the ensemble; writes the soup to OUT/soup (a guardray checkpoint).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def train_ingredients(run: Path, seeds: list[int], out: Path) -> list[Path]:
    from guardray.core.config import load_config
    from guardray.core.records import read_examples
    from guardray.trainer import train_classifier
    cfg = load_config(run / "config.yaml")
    examples = read_examples(run / "data" / "train-round-0.parquet").examples
    paths = []
    for s in seeds:
        path = out / f"seed-{s}"
        if not (path / "guardray.json").exists():
            train_classifier(cfg.trainer, examples, path, resources=cfg.resources, seed=s, split_seed=cfg.run.seed,
                             val_fraction=cfg.data.val_fraction, val_safe_share=cfg.data.val_safe_share)
        paths.append(path)
    return paths


def average(ckpts: list[Path], out: Path) -> Path:
    """Uniform average of every floating-point tensor; integer buffers (position ids) from the first checkpoint."""
    from safetensors.torch import load_file, save_file
    sds = [load_file(str(c / "model.safetensors")) for c in ckpts]
    keys = set(sds[0])
    if any(set(sd) != keys for sd in sds[1:]):
        raise SystemExit("soup: the checkpoints do not share one architecture (different tensor names)")
    soup = {k: (sum(sd[k].float() for sd in sds) / len(sds)).to(sds[0][k].dtype) if sds[0][k].is_floating_point()
            else sds[0][k] for k in sds[0]}
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(ckpts[0], out)
    save_file(soup, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/demo", help="a pipeline run folder (its round-0 checkpoint is seed 0)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2], help="torch seeds of the extra ingredients")
    ap.add_argument("--out", default="runs/soup")
    args = ap.parse_args(argv)
    from val_compare import val_split

    from guardray.classifier import GuardClassifier
    from guardray.core.calibration import choose_threshold
    from guardray.core.metrics import auprc
    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpts = [run / "classifier" / "round-0", *train_ingredients(run, args.seeds, out)]
    soup = average(ckpts, out / "soup")
    meta = json.loads((soup / "guardray.json").read_text())
    policy = meta.get("threshold_policy", "f1_1se")
    val = val_split(run)
    y = np.array([e.label == "unsafe" for e in val])
    texts = [e.text for e in val]

    def line(name: str, p: np.ndarray) -> tuple[str, float]:
        thr = choose_threshold(y.astype(int), p, policy, meta.get("target_fpr") or 0.05)
        f = p >= thr
        tp, fp, fn = int((f & y).sum()), int((f & ~y).sum()), int((~f & y).sum())
        return (f"| {name} | {auprc(y.astype(int), p):.4f} | {2 * tp / (2 * tp + fp + fn):.3f} | "
                f"{fp / max(1, int((~y).sum())):.3f} | {thr:.3f} |"), thr

    print(f"validation: {len(val)} examples ({int(y.sum())} unsafe), threshold policy {policy}\n")
    print("| model | val AUPRC | val F1 | val FPR | threshold |\n|---|---:|---:|---:|---:|")
    scores = []
    for c in ckpts:
        scores.append(np.asarray(GuardClassifier.load(str(c)).score(texts).unsafe))
        print(line(str(c), scores[-1])[0])
    text, thr = line(f"soup of {len(ckpts)}", np.asarray(GuardClassifier.load(str(soup)).score(texts).unsafe))
    print(text)
    print(line(f"ensemble of {len(ckpts)} (mean score)", np.mean(scores, axis=0))[0])
    meta.update(threshold=float(thr), soup_of=[str(c) for c in ckpts])
    (soup / "guardray.json").write_text(json.dumps(meta, indent=2))
    print(f"\nwrote {soup} (threshold {thr:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
