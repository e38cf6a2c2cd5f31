"""Does a k-NN vote over the training texts add to the fine-tuned classifier? Chosen on validation, evaluated once.

The guard's errors on the evaluation sets look like bias, not variance (benchmarks/quality.md: soups and ensembles
of the same data do not transfer better). A k-NN vote in a *frozen* embedding space errs differently from the
fine-tuned model, so mixing the two is the cheapest "different view" left on CPU. This script:

1. recomputes a run's round-0 validation split (held-out seeds and their children, grouped by seed) and uses the
   rest of the round-0 training data as the k-NN reference (no validation group is a neighbour);
2. scores validation with the checkpoint and with the k-NN vote (all-MiniLM-L6-v2 mean embeddings, k nearest,
   softmax(cosine / T)-weighted unsafe share, as baseline:knn-embed in guardray.evaluate);
3. mixes them two ways for w in 0.0, 0.1, ..., 1.0 (w = the classifier's weight): `prob` = w * p_clf +
   (1 - w) * p_knn, and `rank` = the same over each score's empirical CDF on validation (so the two scales match);
   picks the mix and w with the best validation AUPRC, and its threshold with the checkpoint's own policy
   (f1_1se by default) on validation;
4. only then, with `--eval`, scores the evaluation sets once: the checkpoint at its own threshold beside the
   chosen mix at its validation threshold (F1, FPR, AUPRC).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/knn_mix.py --run runs/demo --ckpt round-2 \\
        --eval ../shared/data/openai-moderation ../shared/data/xstest ../shared/data/toxigen-demonstrations \\
        ../shared/data/ethos

Serving cost of the mix: a second MiniLM-L6 forward per text (the frozen encoder) plus a matrix product against
the reference embeddings (6,900 x 384 floats for the demo): about twice the classifier's cost.

`--view profanity` mixes in alt-profanity-check instead of the k-NN vote (the `baselines` extra: a linear SVM on
TF-IDF n-grams trained upstream on human-labelled toxic comments, among them the Davidson tweets, so a davidson score
of the mix would be contaminated): the one offline view trained on real comments rather than on our seeds, and the
strongest single scorer on openai-moderation in the baseline table (AUPRC 0.737). No reference set; the same choice
on validation, the same single evaluation.

`--embedder static` replaces the frozen forward by a static distillation of the same MiniLM (as model2vec does:
each vocabulary token's embedding alone, PCA to 256 dimensions, a text = the IDF-weighted mean of its tokens;
`StaticEmbedder` below, 16 s to build), which costs a table lookup at serving. model2vec itself was not used: its
`distill` extra pins transformers < 5.4 against the project's 5.17.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WEIGHTS = [round(0.1 * i, 1) for i in range(11)]


class StaticEmbedder:
    """Static per-token vectors distilled from a frozen encoder (model2vec's recipe, without its pins)."""

    def __init__(self, name: str = "minilm", dims: int = 256, batch: int = 1024):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from guardray.models import resolve
        path = resolve(name)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path).eval()
        vocab, cls, sep = self.tokenizer.vocab_size, self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        vecs = np.zeros((vocab, model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, vocab, batch):
                ids = torch.arange(s, min(vocab, s + batch))
                x = torch.stack([torch.full_like(ids, cls), ids, torch.full_like(ids, sep)], 1)
                vecs[s:s + len(ids)] = model(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state \
                    .mean(1).numpy()
        vecs -= vecs.mean(0)
        vt = np.linalg.svd(vecs, full_matrices=False)[2]
        self.vecs = (vecs @ vt[:dims].T).astype(np.float32)
        self.idf = np.ones(vocab, dtype=np.float32)

    def fit_idf(self, texts: list[str]) -> "StaticEmbedder":
        df = np.zeros(len(self.idf))
        for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]:
            df[list(set(ids))] += 1
        self.idf = (np.log((1 + len(texts)) / (1 + df)) + 1).astype(np.float32)
        return self

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.vecs.shape[1]), dtype=np.float32)
        for i, ids in enumerate(self.tokenizer(texts, add_special_tokens=False, truncation=True,
                                               max_length=512)["input_ids"]):
            if ids:
                w = self.idf[ids]
                out[i] = (self.vecs[ids] * w[:, None]).sum(0) / w.sum()
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def ecdf(reference: np.ndarray):
    """x -> share of the reference scores <= x (fit on validation, applied to any later scores)."""
    ref = np.sort(reference)
    return lambda x: np.searchsorted(ref, x, side="right") / len(ref)


def mix(kind: str, w: float, p_clf: np.ndarray, p_knn: np.ndarray, cdf_clf, cdf_knn) -> np.ndarray:
    if kind == "prob":
        return w * p_clf + (1 - w) * p_knn
    return w * cdf_clf(p_clf) + (1 - w) * cdf_knn(p_knn)


def metrics(y: np.ndarray, p: np.ndarray, thr: float) -> str:
    from guardray.core.metrics import auprc, binary_metrics
    m = binary_metrics(y.astype(int), p, thr)
    return f"{m['f1'] or 0.0:.3f} / {m['fpr'] or 0.0:.3f} / {auprc(y.astype(int), p):.3f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/demo", help="a pipeline run folder")
    ap.add_argument("--ckpt", default="round-2", help="checkpoint name under RUN/classifier")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--temperature", type=float, default=0.05)
    ap.add_argument("--embedder", choices=["minilm", "static"], default="minilm",
                    help="the frozen view: MiniLM mean embeddings, or a static distillation of them")
    ap.add_argument("--view", choices=["knn", "profanity"], default="knn",
                    help="the second view: the k-NN vote (default), or alt-profanity-check's linear model, trained "
                         "upstream on human-labelled comments (the `baselines` extra; see the module docstring)")
    ap.add_argument("--eval", nargs="*", default=[], help="evaluation set folders, scored once after the choice")
    args = ap.parse_args(argv)
    from guardray.classifier import GuardClassifier
    from guardray.core.calibration import choose_threshold
    from guardray.core.config import load_config
    from guardray.core.metrics import auprc
    from guardray.core.records import read_examples
    from guardray.core.splits import split_validation
    from guardray.embed import Embedder
    from guardray.evaluate import knn_vote, load_eval_set

    run = Path(args.run)
    cfg = load_config(run / "config.yaml")
    train, val = split_validation(read_examples(run / "data" / "train-round-0.parquet").examples,
                                  cfg.data.val_fraction, cfg.run.seed, safe_share=cfg.data.val_safe_share)
    y_ref = np.array([float(e.unsafe) for e in train])
    y = np.array([e.unsafe for e in val])
    clf = GuardClassifier.load(str(run / "classifier" / args.ckpt))
    policy = clf.meta.get("threshold_policy", "f1_1se")
    target_fpr = clf.meta.get("target_fpr") or 0.05
    if args.view == "profanity":
        from profanity_check import predict_prob

        def view(texts):
            return np.asarray(predict_prob(texts), dtype=np.float64)
    else:
        emb = StaticEmbedder().fit_idf([e.text for e in train]) if args.embedder == "static" else Embedder("minilm")
        ref = emb.encode([e.text for e in train])

        def view(texts):
            return knn_vote(emb.encode(texts) @ ref.T, y_ref, args.k, args.temperature)
    val_texts = [e.text for e in val]
    p_clf = np.asarray(clf.score(val_texts).unsafe, dtype=np.float64)
    p_knn = view(val_texts)
    cdf_clf, cdf_knn = ecdf(p_clf), ecdf(p_knn)
    print(f"{run} {args.ckpt}: validation {len(val)} ({int(y.sum())} unsafe), view {args.view} (k-NN reference "
          f"{len(train)}, {int(y_ref.sum())} unsafe, k={args.k}, T={args.temperature}), threshold policy {policy}\n")
    print("| mix | " + " | ".join(f"w={w}" for w in WEIGHTS) + " |\n|---|" + "---:|" * len(WEIGHTS))
    best = (-1.0, "prob", 1.0)
    for kind in ("prob", "rank"):
        vals = []
        for w in WEIGHTS:
            a = auprc(y.astype(int), mix(kind, w, p_clf, p_knn, cdf_clf, cdf_knn))
            vals.append(a)
            best = max(best, (a, kind, w))
        print(f"| {kind} (validation AUPRC) | " + " | ".join(f"{a:.4f}" for a in vals) + " |")
    _, kind, w = best
    p_mix = mix(kind, w, p_clf, p_knn, cdf_clf, cdf_knn)
    thr = choose_threshold(y.astype(int), p_mix, policy, target_fpr)
    print(f"\nchosen on validation: {kind} mix, w={w} (AUPRC {best[0]:.4f} vs classifier "
          f"{auprc(y.astype(int), p_clf):.4f}, {args.view} alone {auprc(y.astype(int), p_knn):.4f}); "
          f"threshold {thr:.3f} "
          f"({policy})")
    print(f"validation F1 / FPR / AUPRC: classifier {metrics(y, p_clf, clf.threshold)} at {clf.threshold:.3f}, "
          f"mix {metrics(y, p_mix, thr)}")
    if not args.eval:
        return 0
    print("\n| set | n | classifier F1 / FPR / AUPRC | mix F1 / FPR / AUPRC |\n|---|---:|---|---|")
    for path in args.eval:
        name, ex = load_eval_set(path)
        texts = [e.text for e in ex]
        ye = np.array([e.unsafe for e in ex])
        pc = np.asarray(clf.score(texts).unsafe, dtype=np.float64)
        pk = view(texts)
        pm = mix(kind, w, pc, pk, cdf_clf, cdf_knn)
        print(f"| {name} | {len(ex)} | {metrics(ye, pc, clf.threshold)} | {metrics(ye, pm, thr)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
