"""Seeds a cross-fitted model disagrees with most: candidates for a human label check (never relabelled by this).

Out-of-fold unsafe probability of every packaged seed (10-fold, class-balanced logistic regression on MiniLM mean
embeddings and on TF-IDF word 1-2 + character 2-5 grams, the two averaged), then the N safe seeds scored most unsafe
and the N unsafe seeds scored least unsafe, with id, style and tags, for a reader to check against the taxonomy.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/seed_oof.py [--seeds guardray/data/seeds.jsonl] [--top 70]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default=str(ROOT / "guardray" / "data" / "seeds.jsonl"))
    ap.add_argument("--top", type=int, default=70)
    args = ap.parse_args(argv)
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from guardray.embed import Embedder
    rows = [json.loads(line) for line in open(args.seeds, encoding="utf-8") if line.strip()]
    texts = [r["text"] for r in rows]
    y = np.array([r["label"] == "unsafe" for r in rows], int)
    cv = StratifiedKFold(10, shuffle=True, random_state=0)

    def oof(x):
        lr = LogisticRegression(C=4, max_iter=3000, class_weight="balanced")
        return cross_val_predict(lr, x, y, cv=cv, method="predict_proba")[:, 1]

    emb = oof(np.asarray(Embedder().encode(texts)))
    tfidf = oof(hstack([TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit_transform(texts),
                        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=3,
                                        sublinear_tf=True).fit_transform(texts)]).tocsr())
    p = (emb + tfidf) / 2
    print(f"{len(rows)} seeds; out-of-fold ROC-AUC: embeddings {roc_auc_score(y, emb):.3f}, "
          f"TF-IDF {roc_auc_score(y, tfidf):.3f}, both {roc_auc_score(y, p):.3f}")
    order = np.argsort(-p)
    for title, label, idx in (("labelled safe, scored most unsafe", 0, order),
                              ("labelled unsafe, scored least unsafe", 1, order[::-1])):
        print(f"\n## {title}\n")
        for i in [i for i in idx if y[i] == label][:args.top]:
            r = rows[i]
            print(f"{p[i]:.2f} {r['id']} {r.get('categories', [])} [{r.get('style')}|{','.join(r.get('tags', []))}] "
                  f"{r['text'][:200]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
