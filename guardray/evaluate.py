"""Evaluation harness: score a guardray checkpoint or a baseline on evaluation sets; write a report and plots.

    guardray eval --model runs/demo/checkpoint --data ../shared/data/openai-moderation ../shared/data/xstest \\
        --out runs/demo/eval
    guardray eval --model baseline:tfidf-lr --data ../shared/data/xstest --out /tmp/ev [--train seeds.jsonl]

`--model` is a guardray checkpoint folder, a registry name / HF id (an untrained backbone: random head, threshold
0.5), or a baseline: `baseline:tfidf-lr` (TF-IDF + logistic regression trained here on `--train`, default the
packaged seeds), `baseline:profanity` (the PyPI package alt-profanity-check, pretrained upstream) or
`baseline:knn-embed` (k nearest training texts in MiniLM embedding space). Each states what it was trained on.

`--data` takes JSONL files in the schema of ../shared/data/*/eval.jsonl (`id`, `text`, `label` safe/unsafe,
`categories` (upstream names), `source`) or folders holding an `eval.jsonl`. A set's name is its folder's name
(for a file not called eval.jsonl: the file name without extension).

Writes to `--out`: `report.json` (every metric per set, `null` where undefined - see guardray.core.metrics for the
exact definitions), `report.md` (the same as tables), `pr_curves.png` (precision-recall curve per set, operating
point marked), `category_recall_<set>.png` (recall per upstream category) and `scores/<set>.jsonl` (id, label,
score per row, for error analysis). Precision, recall, F1 and FPR are at ONE fixed threshold: the model's
calibrated one (checkpoint guardray.json; for baselines, calibrated on their own training data) unless
`--threshold` is given - never a per-set best threshold.

The `Evaluator` Ray actor wraps `evaluate()` so the pipeline can run it off the driver.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import ray

from guardray.core import metrics as M
from guardray.core.config import EvalConfig
from guardray.core.records import DataError, Example, now, read_examples
from guardray.errors import UsageError

BASELINES = ("tfidf-lr", "profanity", "knn-embed")
REPORT_METRICS = ("f1", "precision", "recall", "fpr", "auprc", "roc_auc", "recall_at_1pct_fpr")


# ---------------------------------------------------------------- data

def load_eval_set(path) -> tuple[str, list[Example]]:
    """(set name, examples) from a JSONL file or a folder holding eval.jsonl. Bad rows raise DataError (file:line)."""
    p = Path(path)
    if p.is_dir():
        f = p / "eval.jsonl"
        if not f.exists():
            raise DataError(f"{p}: folder has no eval.jsonl; pass a data set folder (e.g. ../shared/data/xstest) "
                            "or a .jsonl file")
        name = p.resolve().name
    else:
        f = p
        name = p.resolve().parent.name if p.name == "eval.jsonl" else p.stem
    # eval categories are upstream names (hate, homonyms, ...), not taxonomy codes
    return name, read_examples(f, strict_categories=False).examples


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _load_train(train_file: str | None) -> tuple[str, list[Example]]:
    from guardray.data import SEEDS_PATH
    path = Path(train_file) if train_file else SEEDS_PATH
    ex = read_examples(path, strict_categories=False).examples
    n_unsafe = sum(e.unsafe for e in ex)
    if n_unsafe < 2 or len(ex) - n_unsafe < 2:
        raise DataError(f"{path}: a baseline needs at least 2 safe and 2 unsafe training rows; it has "
                        f"{n_unsafe} unsafe and {len(ex) - n_unsafe} safe")
    return (str(path) if train_file else "the packaged seeds guardray/data/seeds.jsonl"), ex


def _trained_on(path: str, ex: list[Example]) -> str:
    n_u = sum(e.unsafe for e in ex)
    return f"{path} ({len(ex)} rows: {n_u} unsafe, {len(ex) - n_u} safe)"


def _by_length(fn, texts: list[str], chunk: int, progress: bool, desc: str) -> np.ndarray:
    """fn over texts in chunks of similar length (length bucketing), with a progress bar; results in input order."""
    from tqdm.auto import tqdm
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros(len(texts), dtype=np.float64)
    for s in tqdm(range(0, len(order), chunk), desc=desc, unit="batch", disable=not progress):
        idx = order[s:s + chunk]
        out[idx] = fn([texts[i] for i in idx])
    return out


# ---------------------------------------------------------------- scorers

class TfidfLRScorer:
    """baseline:tfidf-lr: word 1-2-gram + char 2-5-gram TF-IDF, class-balanced logistic regression. Threshold: best
    F1 of 5-fold out-of-fold scores on the training file (the same policy as the trainer's best_f1)."""

    def __init__(self, train_file: str | None = None, seed: int = 0):
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_predict
        from sklearn.pipeline import make_pipeline, make_union
        from sklearn.feature_extraction.text import TfidfVectorizer
        path, ex = _load_train(train_file)
        texts, y = [e.text for e in ex], np.array([int(e.unsafe) for e in ex])

        def pipe():
            return make_pipeline(
                make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, lowercase=True),
                           TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)),
                LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000))
        folds = min(5, int(y.sum()), int(len(y) - y.sum()))
        oof = cross_val_predict(pipe(), texts, y, method="predict_proba",
                                cv=StratifiedKFold(folds, shuffle=True, random_state=seed))[:, 1]
        self.threshold, cv_f1 = M.best_f1_threshold(y, oof)
        self.model = pipe().fit(texts, y)
        self.train_texts = texts
        self.trained_on = _trained_on(path, ex)
        self.description = (f"TF-IDF (word 1-2 + char 2-5 grams) + logistic regression (class-balanced), trained "
                            f"here on {self.trained_on}; threshold {self.threshold:.3f} = best F1 of {folds}-fold "
                            f"out-of-fold scores on that file (CV F1 {cv_f1:.3f})")

    def score(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        return _by_length(lambda t: self.model.predict_proba(t)[:, 1], texts, max(batch_size, 1024), progress,
                          "tfidf-lr")


class ProfanityScorer:
    """baseline:profanity: alt-profanity-check's packaged linear model (pretrained upstream); threshold 0.5."""

    def __init__(self):
        import profanity_check  # loads the packaged model (joblib, shipped inside the PyPI wheel)
        self._predict_prob = profanity_check.predict_prob
        self.threshold = 0.5
        self.train_texts = None
        version = metadata.version("alt-profanity-check")
        self.trained_on = (f"not trained here: alt-profanity-check {version} ships a linear SVM trained upstream "
                           "on Davidson et al. 2017 tweets + Jigsaw toxic comments (so davidson-hate-offensive "
                           "results are contaminated)")
        self.description = f"{self.trained_on}; threshold 0.5 (the package's predict())"

    def score(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        return _by_length(self._predict_prob, texts, max(batch_size, 1024), progress, "profanity")


def knn_vote(sims: np.ndarray, y: np.ndarray, k: int, temperature: float) -> np.ndarray:
    """Per row of `sims` (query x reference cosines): the softmax(cos / temperature)-weighted share of unsafe (y=1)
    among the k most similar references."""
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    s = np.take_along_axis(sims, top, axis=1)
    w = np.exp((s - s.max(axis=1, keepdims=True)) / temperature)
    return (w * y[top]).sum(axis=1) / w.sum(axis=1)


class KnnEmbedScorer:
    """baseline:knn-embed: score = softmax(cosine / T)-weighted unsafe vote of the k nearest training texts in
    MiniLM space (guardray.embed.Embedder). Threshold: best F1 of leave-one-out scores on the training file."""

    def __init__(self, train_file: str | None = None, k: int = 10, temperature: float = 0.05,
                 device: str = "cpu"):
        from guardray.embed import Embedder
        path, ex = _load_train(train_file)
        self.embedder = Embedder("minilm", device=device)
        self.k, self.temperature = min(k, len(ex) - 1), temperature
        self.train_texts = [e.text for e in ex]
        self.y = np.array([float(e.unsafe) for e in ex])
        self.emb = self.embedder.encode(self.train_texts)
        sims = self.emb @ self.emb.T
        np.fill_diagonal(sims, -np.inf)  # leave-one-out: a training text is not its own neighbour
        self.threshold, loo_f1 = M.best_f1_threshold(self.y.astype(int), self._vote(sims))
        self.trained_on = _trained_on(path, ex)
        self.description = (f"k={self.k} nearest training texts in all-MiniLM-L6-v2 space, softmax(cos/"
                            f"{temperature})-weighted unsafe vote; index = {self.trained_on}; threshold "
                            f"{self.threshold:.3f} = best F1 of leave-one-out scores on that file "
                            f"(LOO F1 {loo_f1:.3f})")

    def _vote(self, sims: np.ndarray) -> np.ndarray:
        return knn_vote(sims, self.y, self.k, self.temperature)

    def score(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        def fn(chunk):
            return self._vote(self.embedder.encode(chunk, batch_size=batch_size) @ self.emb.T)
        return _by_length(fn, texts, max(batch_size, 256), progress, "knn-embed")


class GuardScorer:
    """A guardray checkpoint (or untrained backbone) through GuardClassifier; threshold from guardray.json."""

    def __init__(self, model: str, device: str = "cpu", max_length: int | None = None, precision: str = "auto"):
        from guardray.classifier import GuardClassifier
        self.clf = GuardClassifier.load(model, device=device, max_length=max_length, precision=precision)
        self.threshold = self.clf.threshold
        self.policy = {"name": self.clf.policy.name, "codes": list(self.clf.codes)}
        self.train_texts = None
        meta = self.clf.meta
        if self.clf.trained:
            data = meta.get("train_data") or meta.get("data") or meta.get("trained_on") or "see its model card"
            self.trained_on = f"guardray checkpoint {model}; training data: {data}"
            self.description = (f"{self.trained_on}; threshold {self.threshold:.3f} calibrated at training time "
                                f"({meta.get('threshold_policy', 'from guardray.json')})")
        else:
            self.trained_on = f"nothing: {model} is an untrained backbone (random head)"
            self.description = f"{self.trained_on}; threshold {self.threshold:.3f} (default)"

    def score(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        return self.clf.score(texts, batch_size=batch_size, progress=progress).unsafe.astype(np.float64)


def _auto_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def make_scorer(model: str, train_file: str | None = None, *, device: str | None = None,
                max_length: int | None = None, precision: str = "auto"):
    """A scorer for `model`: `.score(texts) -> np.ndarray` of unsafe probabilities, `.threshold`, `.description`,
    `.trained_on`, `.train_texts` (None when not trained here)."""
    device = device or _auto_device()
    if model.startswith("baseline:"):
        name = model.split(":", 1)[1]
        if name not in BASELINES:
            raise UsageError(f"unknown baseline {name!r}; use one of " + ", ".join(f"baseline:{b}" for b in BASELINES))
        if name == "profanity":
            if train_file:
                raise UsageError("baseline:profanity is pretrained upstream and takes no --train file")
            return ProfanityScorer()
        if name == "tfidf-lr":
            return TfidfLRScorer(train_file)
        return KnnEmbedScorer(train_file, device=device)
    if train_file:
        raise UsageError(f"--train applies to baseline:tfidf-lr and baseline:knn-embed only, not to {model!r}")
    return GuardScorer(model, device=device, max_length=max_length, precision=precision)


# ---------------------------------------------------------------- evaluation

def _dataset_report(path: str, ex: list[Example], scores: np.ndarray, threshold: float, seconds: float,
                    train_norm: set[str] | None) -> dict:
    y = np.array([int(e.unsafe) for e in ex])
    bm = M.binary_metrics(y, scores, threshold)
    return {
        "path": str(path), "n": bm["n"], "n_unsafe": bm["n_unsafe"], "n_safe": bm["n_safe"],
        "f1": bm["f1"], "precision": bm["precision"], "recall": bm["recall"], "fpr": bm["fpr"],
        "accuracy": bm["accuracy"], "tp": bm["tp"], "fp": bm["fp"], "fn": bm["fn"], "tn": bm["tn"],
        "auprc": M.auprc(y, scores), "roc_auc": M.roc_auc(y, scores),
        "recall_at_1pct_fpr": M.recall_at_fpr(y, scores, 0.01),
        "per_category": M.per_category_recall(y, [e.categories for e in ex], scores >= threshold),
        "texts_per_second": len(ex) / seconds if seconds > 0 else None, "seconds": seconds,
        # throughput depends on what else ran: record the machine's 1-minute load average and core count with it
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "cpus": os.cpu_count(),
        # rows whose normalised text is in the scorer's training file (contamination check; None = not trained here)
        "train_overlap": None if train_norm is None else sum(_norm(e.text) in train_norm for e in ex),
    }


def evaluate(model: str, data: list[str], out_dir, threshold: float | None = None, batch_size: int = 32,
             train_file: str | None = None, plots: bool = True, *, max_length: int | None = None,
             device: str | None = None, progress: bool = True, precision: str = "auto") -> dict:
    """Score `model` on each set in `data` at one fixed threshold; write report.json, report.md, plots and
    per-row scores under `out_dir`; return the report dict."""
    if isinstance(data, (str, Path)):
        data = [data]
    if not data:
        raise UsageError("no evaluation data given; pass --data FILE_OR_DIR [...]")
    if threshold is not None and not (0.0 <= threshold <= 1.0):
        raise UsageError(f"--threshold {threshold} is outside [0, 1]; scores are probabilities")
    sets: dict[str, tuple[str, list[Example]]] = {}
    for p in data:  # load (and validate) every set before loading any model
        name, ex = load_eval_set(p)
        if name in sets:
            raise UsageError(f"two data sets are both named {name!r} ({sets[name][0]} and {p}); rename one")
        by_role = {r: [e for e in ex if e.role == r] for r in ("user", "assistant")}
        if by_role["assistant"]:  # prompt and response rows are reported apart (two tasks, two rows)
            for r, part in by_role.items():
                if part:
                    sets[f"{name}:{'response' if r == 'assistant' else 'prompt'}"] = (str(p), part)
        else:
            sets[name] = (str(p), ex)
    if train_file:
        tf = Path(train_file).resolve()
        for name, (p, _) in sets.items():
            pp = Path(p).resolve()
            if tf in (pp, pp / "eval.jsonl"):
                raise UsageError(f"--train {train_file} is the evaluation set {name!r}; never train on evaluation "
                                 "data")
    t_load = time.perf_counter()
    scorer = make_scorer(model, train_file, device=device, max_length=max_length, precision=precision)
    load_s = time.perf_counter() - t_load
    thr = float(scorer.threshold if threshold is None else threshold)
    train_norm = None if scorer.train_texts is None else {_norm(t) for t in scorer.train_texts}

    out = Path(out_dir)
    (out / "scores").mkdir(parents=True, exist_ok=True)
    report = {"model": model, "description": scorer.description, "trained_on": scorer.trained_on,
              "policy": getattr(scorer, "policy", None),
              "threshold": thr, "threshold_source": "--threshold" if threshold is not None else "model",
              "created_at": now(), "load_seconds": load_s,
              "precision": getattr(getattr(scorer, "clf", None), "precision", None), "datasets": {}}
    curves = {}
    for name, (p, ex) in sets.items():
        texts = [e.model_text for e in ex]  # a response row: the role marker + its transcript
        t0 = time.perf_counter()
        scores = np.asarray(scorer.score(texts, batch_size=batch_size, progress=progress), dtype=np.float64)
        seconds = time.perf_counter() - t0
        if scores.shape != (len(ex),):
            raise RuntimeError(f"{model}: scorer returned shape {scores.shape} for {len(ex)} texts")
        report["datasets"][name] = _dataset_report(p, ex, scores, thr, seconds, train_norm)
        curves[name] = (np.array([int(e.unsafe) for e in ex]), scores)
        with (out / "scores" / f"{_safe(name)}.jsonl").open("w", encoding="utf-8") as f:
            for e, s in zip(ex, scores):
                f.write(json.dumps({"id": e.id, "label": e.label, "score": float(s)}) + "\n")
    report["plots"] = write_plots(report, curves, out) if plots else []
    (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    return report


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def render_markdown(report: dict) -> str:
    source = "the model's calibrated threshold" if report["threshold_source"] == "model" else "given with --threshold"
    lines = [f"# guardray eval: `{report['model']}`", "",
             f"- model: {report['description']}",
             *([f"- policy: {report['policy']['name']} (categories: {', '.join(report['policy']['codes'])})"]
               if report.get("policy") else []),
             f"- threshold: {report['threshold']:.4f} ({source}), the same for every set (not a per-set best "
             "threshold)",
             f"- created: {report['created_at']}",
             "- metrics: see guardray/core/metrics.py; n/a = undefined (e.g. FPR, AUPRC, ROC-AUC on an all-unsafe "
             "set); recall@1%FPR = max recall over thresholds with FPR <= 1% (with < 100 safe rows: no false "
             "positive allowed)", "",
             "| data set | n | unsafe | F1 | precision | recall | FPR | AUPRC | ROC-AUC | recall@1%FPR | texts/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, d in report["datasets"].items():
        lines.append(f"| {name} | {d['n']} | {d['n_unsafe']} | " + " | ".join(
            _fmt(d[k]) for k in REPORT_METRICS) + f" | {_fmt(d['texts_per_second'], 0)} |")
    overlaps = {k: d["train_overlap"] for k, d in report["datasets"].items() if d.get("train_overlap")}
    if overlaps:
        lines += ["", "**Warning**: rows whose text is also in the training file: "
                  + ", ".join(f"{k} {v}" for k, v in overlaps.items())]
    for name, d in report["datasets"].items():
        lines += ["", f"## {name}: per-category recall", "",
                  f"`{d['path']}`; confusion at the threshold: TP {d['tp']}, FP {d['fp']}, FN {d['fn']}, TN {d['tn']}."
                  " Recall per category = flagged fraction of that category's unsafe rows; categories carried by "
                  "safe rows also show their FPR.", "",
                  "| category | unsafe rows | recall | safe rows | FPR |", "|---|---:|---:|---:|---:|"]
        for c, v in d["per_category"].items():
            lines.append(f"| {c} | {v['n']} | {_fmt(v['recall'])} | {v.get('n_safe', 0)} | {_fmt(v.get('fpr'))} |")
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def write_plots(report: dict, curves: dict, out: Path) -> list[str]:
    """pr_curves.png (all sets, operating point marked) and category_recall_<set>.png; returns file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    files = []
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for name, (y, s) in curves.items():
        c = M.pr_curve(y, s)
        if c is None:
            continue
        prec, rec, _ = c
        d = report["datasets"][name]
        line, = ax.step(np.r_[0.0, rec], np.r_[1.0, prec], where="post",
                        label=f"{name} (AUPRC {_fmt(d['auprc'])})")
        if d["precision"] is not None:
            ax.plot([d["recall"]], [d["precision"]], "o", color=line.get_color())
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02),
           title=f"{report['model']}: precision-recall (dot = threshold {report['threshold']:.3f})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "pr_curves.png", dpi=110)
    plt.close(fig)
    files.append("pr_curves.png")
    for name, d in report["datasets"].items():
        cats = [(c, v) for c, v in d["per_category"].items() if v["n"] > 0]
        if not cats:
            continue
        cats = sorted(cats, key=lambda cv: -cv[1]["n"])[:40]  # the 40 largest keep the plot readable
        fig, ax = plt.subplots(figsize=(7, 1.2 + 0.28 * len(cats)))
        ax.barh([f"{c} (n={v['n']})" for c, v in cats], [v["recall"] for _, v in cats], color="tab:red")
        ax.invert_yaxis()
        ax.set(xlim=(0, 1), xlabel=f"recall at threshold {report['threshold']:.3f}",
               title=f"{report['model']} on {name}: recall per category")
        ax.tick_params(axis="y", labelsize=7)
        fig.tight_layout()
        f = f"category_recall_{_safe(name)}.png"
        fig.savefig(out / f, dpi=110)
        plt.close(fig)
        files.append(f)
    return files


# ---------------------------------------------------------------- Ray actor

@ray.remote(num_cpus=1)
class Evaluator:
    """Runs `evaluate()` off the driver. Resources: 1 CPU by default; use `.options(num_cpus=, num_gpus=)` (the
    pipeline passes resources.scorer_*). Input: model, absolute data paths, out_dir on storage the actor's node can
    write. Output: the report dict (files are written by the actor, on its node)."""

    def __init__(self, cfg: EvalConfig | None = None):
        self.cfg = cfg or EvalConfig()

    def evaluate(self, model: str, data: list[str], out_dir: str, threshold: float | None = None,
                 train_file: str | None = None, plots: bool | None = None) -> dict:
        return evaluate(model, data, out_dir, threshold=self.cfg.threshold if threshold is None else threshold,
                        batch_size=self.cfg.batch_size, train_file=train_file or self.cfg.train_file or None,
                        plots=self.cfg.plots if plots is None else plots, max_length=self.cfg.max_length,
                        progress=False, precision=self.cfg.precision)


# ---------------------------------------------------------------- CLI

def summary_table(report: dict) -> str:
    head = f"{'data set':<26} {'n':>6} {'F1':>6} {'prec':>6} {'recall':>6} {'FPR':>6} {'AUPRC':>6} {'R@1%':>6} " \
           f"{'texts/s':>8}"
    rows = [head]
    for name, d in report["datasets"].items():
        rows.append(f"{name:<26} {d['n']:>6} " + " ".join(
            f"{_fmt(d[k]):>6}" for k in ("f1", "precision", "recall", "fpr", "auprc", "recall_at_1pct_fpr"))
            + f" {_fmt(d['texts_per_second'], 0):>8}")
    return "\n".join(rows)


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="guardray eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder, registry name, HF id or baseline:NAME")
    p.add_argument("--data", required=True, nargs="+", help="eval JSONL files or folders holding eval.jsonl")
    p.add_argument("--out", required=True, help="output folder for report.json, report.md and plots")
    p.add_argument("--threshold", type=float, default=None, help="override the model's calibrated threshold")
    p.add_argument("--train", default=None, help="training file for baseline:tfidf-lr / baseline:knn-embed "
                                                 "(default: the packaged seeds)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=None, help="tokens per window (guardray checkpoints)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="guardray checkpoints: auto = bf16 where the device computes it natively (as served), "
                        "fp32 = exactly as calibrated")
    p.add_argument("--no-plots", action="store_true")
    a = p.parse_args(argv)
    if a.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {a.batch_size}")
    report = evaluate(a.model, a.data, a.out, threshold=a.threshold, batch_size=a.batch_size, train_file=a.train,
                      plots=not a.no_plots, max_length=a.max_length, device=a.device,
                      progress=True, precision=a.precision)
    print(f"model: {report['description']}\nthreshold: {report['threshold']:.4f}\n")
    print(summary_table(report))
    print(f"\nwrote {Path(a.out) / 'report.json'}, report.md and {len(report['plots'])} plot(s)")
    return 0
