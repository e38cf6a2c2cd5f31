"""Can a cheap signal tell a coherent synthetic child from SmolLM2 word salad? Measured on the team's blind audit.

The demo's kept synthetic children are often fluent-looking nonsense ("Be careful when you tell your tote bag.") or
cut-off fragments, labelled safe; no curation round checks coherence. Before building a "fluency" round, this script
scores the candidates of the team audit (benchmarks/synth_audit_sample.jsonl, labels in synth_audit_labels.jsonl)
with every signal the CPU stack offers and reports how well each separates incoherent texts from the rest:

- `lm_mean`: SmolLM2-135M mean token log-probability of the text alone (after BOS);
- `lm_msg_mean`: the same, conditioned on a chat prompt asking for one user message, end-of-turn token included;
- `lm_eos`: log-probability that the message ends where it ends (a cut-off fragment should score low);
- `slor`: syntactic log-odds ratio (LM log-probability minus unigram log-probability, per token; Kann et al., 2018),
  unigram counts from the packaged seeds;
- `seed_like`: a MiniLM-embedding logistic regression trained to tell the packaged seeds from a run's synthetic
  candidates (`--run`; audit texts left out), so that "looks like a human-written seed" is the score;
- `letters<0.6`: the rule "fewer than 60% of the non-space characters are letters" (hits counted, and the seeds
  it would have dropped).

"Incoherent" = the team labelled the text `unclear`, or its note names it incoherent, garbled, nonsense, a fragment,
truncated or meaningless (a reader sometimes labelled a benign fragment `safe` and said so in the note).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/synth_fluency.py [--run runs/demo]
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

INCOHERENT = re.compile(r"incoheren|word salad|nonsense|truncat|fragment|meaningless|garbl|gibberish|unreadable|"
                        r"no meaning|single word|emoji only|format code", re.I)
MESSAGE_PROMPT = "Write one message that a person might send to an AI chatbot."


def audit() -> tuple[list[str], np.ndarray, list[dict]]:
    texts = {}
    for line in open(ROOT / "benchmarks" / "synth_audit_sample.jsonl"):
        r = json.loads(line)
        texts[r["id"]] = r["text"]
    labels = [json.loads(line) for line in open(ROOT / "benchmarks" / "synth_audit_labels.jsonl")]
    bad = np.array([r["label"] == "unclear" or bool(INCOHERENT.search(r.get("note", ""))) for r in labels])
    return [texts[r["id"]] for r in labels], bad, labels


def seed_texts() -> list[str]:
    return [json.loads(line)["text"] for line in open(ROOT / "guardray" / "data" / "seeds.jsonl")]


def lm_signals(texts: list[str], seeds: list[str]) -> dict[str, np.ndarray]:
    import torch
    from guardray import models
    path = models.resolve("smollm2-135m")
    tok = models.load_tokenizer(path)
    lm = models.load_causal_lm(path, dtype="float32").eval()
    counts = collections.Counter(i for t in seeds for i in tok(t, add_special_tokens=False).input_ids)
    total, vocab = sum(counts.values()), len(tok)
    prefix = tok.apply_chat_template([{"role": "user", "content": MESSAGE_PROMPT}], tokenize=False,
                                     add_generation_prompt=True)
    pids = tok(prefix, add_special_tokens=False).input_ids
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    end = tok.convert_tokens_to_ids("<|im_end|>")
    end = tok.eos_token_id if end is None or end == tok.unk_token_id else end

    def logprobs(ids: list[int]) -> np.ndarray:
        x = torch.tensor([ids])
        return torch.log_softmax(lm(x).logits[0, :-1].float(), -1).gather(1, x[0, 1:, None])[:, 0].numpy()

    out = collections.defaultdict(list)
    with torch.inference_mode():
        for t in texts:
            ids = tok(t, add_special_tokens=False, truncation=True, max_length=256).input_ids
            plain = logprobs([start] + ids)
            msg = logprobs(pids + ids + [end])[len(pids) - 1:]
            uni = np.log((np.array([counts[i] for i in ids]) + 1) / (total + vocab))
            out["lm_mean"].append(plain.mean())
            out["lm_msg_mean"].append(msg.mean())
            out["lm_eos"].append(msg[-1])
            out["slor"].append((plain.sum() - uni.sum()) / len(ids))
    return {k: np.array(v) for k, v in out.items()}


def seed_likeness(texts: list[str], seeds: list[str], run: Path) -> np.ndarray | None:
    from sklearn.linear_model import LogisticRegression
    from guardray.core.records import read_examples
    from guardray.embed import Embedder
    held = set(texts)
    cands = [e.text for f in sorted((run / "synth").glob("v*/*/data.parquet")) if f.parent.name != "curated"
             for e in read_examples(f).examples if e.text not in held]
    if not cands:
        return None
    emb = Embedder()
    x = np.vstack([emb.encode(seeds), emb.encode(cands)])
    y = np.r_[np.ones(len(seeds)), np.zeros(len(cands))]
    clf = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced").fit(x, y)
    print(f"seed_like: {len(seeds)} seeds vs {len(cands)} candidates of {run}", flush=True)
    return clf.predict_proba(emb.encode(texts))[:, 1]


def letter_share(text: str) -> float:
    s = re.sub(r"\s", "", text)
    return sum(c.isalpha() for c in s) / max(1, len(s))


def main(argv: list[str] | None = None) -> int:
    from sklearn.metrics import roc_auc_score
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "demo", help="a run whose synth candidates train "
                    "the seed_like signal (skipped where absent)")
    args = ap.parse_args(argv)
    texts, bad, _ = audit()
    seeds = seed_texts()
    print(f"audit: {len(texts)} candidates, {bad.sum()} incoherent", flush=True)
    signals = lm_signals(texts, seeds)
    like = seed_likeness(texts, seeds, args.run) if (args.run / "synth").exists() else None
    if like is not None:
        signals["seed_like"] = like
    print("\n| signal (higher = more fluent) | AUROC incoherent vs rest | incoherent caught when 10% of the rest "
          "is dropped |\n|---|---:|---:|")
    for name, s in signals.items():
        cut = np.quantile(s[~bad], 0.10)
        print(f"| {name} | {roc_auc_score(bad, -s):.3f} | {(s[bad] < cut).sum()} / {bad.sum()} |")
    hit = np.array([letter_share(t) < 0.6 for t in texts])
    seed_hits = [t for t in seeds if letter_share(t) < 0.6]
    print(f"\nletters<0.6: incoherent {(hit & bad).sum()} / {bad.sum()}, rest {(hit & ~bad).sum()} / {(~bad).sum()}, "
          f"packaged seeds {len(seed_hits)} / {len(seeds)} (e.g. {seed_hits[:3]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
