"""Benchmark: peak memory and time of one PPO update of the learner, LM head on the completion positions only (the
learner now) vs the full-sequence logits it computed before (the baseline), side by side, each variant in a fresh
subprocess so its peak RSS is its own.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/learner_memory.py --model smollm2-135m --rollouts 16 \\
        --prompt-tokens 200 --new-tokens 40 --out benchmarks/learner_memory.md

Rollouts are synthetic (random prompt and completion token ids, random rewards, the demo's PPO settings:
minibatch 8, 2 PPO epochs): the update's cost depends on their shapes, not their text.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_variant(args) -> dict:
    import torch
    torch.set_num_threads(args.threads)
    from guardray.core.config import GeneratorConfig, PPOConfig
    from guardray.core.records import Example, Generation, RewardBatch, Rollout
    from guardray.learner import LocalPPOLearner

    class FullLogits(LocalPPOLearner):
        """The learner before: LM head over the whole sequence, then gather the completion positions."""

        @staticmethod
        def _completion_logits(model, mb):
            out = model(input_ids=mb["ids"], attention_mask=mb["att"], output_hidden_states=True)
            pos = mb["pos"].unsqueeze(-1)
            logits = out.logits.gather(1, pos.expand(-1, -1, out.logits.shape[-1]))
            h = out.hidden_states[-1]
            return logits, h.gather(1, pos.expand(-1, -1, h.shape[-1]))

    cls = FullLogits if args.variant == "full_logits" else LocalPPOLearner
    cfg = PPOConfig(policy_model=args.model, minibatch_size=8, ppo_epochs=2, max_new_tokens=args.new_tokens)
    learner = cls(cfg, GeneratorConfig(model=args.model, top_p=1.0, dtype="float32"), seed=0)
    g = torch.Generator().manual_seed(0)
    vocab = learner.tokenizer.vocab_size
    seed = Example(id="s", text="x", label="safe")
    rollouts = []
    for i in range(args.rollouts):
        p = torch.randint(10, vocab, (args.prompt_tokens,), generator=g).tolist()
        c = torch.randint(10, vocab, (args.new_tokens,), generator=g).tolist()
        gen = Generation(prompt_id=f"p{i}", text="", prompt_token_ids=tuple(p), token_ids=tuple(c), logprobs=(),
                         finish_reason="length", sampling={}, model_version=0, generator="bench@0")
        rollouts.append(Rollout(seed=seed, generation=gen, policy_version=0))
    r = tuple(float(x) for x in torch.rand(args.rollouts, generator=g))
    rewards = RewardBatch(rewards=r, components={"reward": r}, policy_version=0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    stats = learner.update(rollouts, rewards)
    return {"variant": args.variant, "seconds": time.perf_counter() - t0, "rss_before_mib": base,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "loss": stats.get("policy_loss"), "kl": stats.get("kl")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rollouts", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=200)
    ap.add_argument("--new-tokens", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variant", default="", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.variant:
        print(json.dumps(run_variant(args)))
        return 0
    load0 = os.getloadavg()[0]
    rows = []
    for variant in ("full_logits", "completion_logits"):
        cmd = [sys.executable, __file__, "--variant", variant] + [
            f"--{k.replace('_', '-')}={getattr(args, k)}" for k in ("model", "rollouts", "prompt_tokens",
                                                                    "new_tokens", "threads")]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
        print(rows[-1], flush=True)
    lines = ["| learner | one PPO update, s | peak RSS, MiB | RSS after loading, MiB |", "|---|---:|---:|---:|"]
    for r in rows:
        name = {"full_logits": "before: LM head over the whole sequence (baseline)",
                "completion_logits": "now: LM head on the completion positions"}[r["variant"]]
        lines.append(f"| {name} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} | {r['rss_before_mib']:.0f} |")
    meta = (f"model `{args.model}` (fp32, policy + frozen reference + value head), {args.rollouts} rollouts of "
            f"{args.prompt_tokens} prompt + {args.new_tokens} completion tokens, minibatch 8, 2 PPO epochs, "
            f"{args.threads} threads, {platform.machine()}, {os.cpu_count()} cores, load average {load0:.1f} -> "
            f"{os.getloadavg()[0]:.1f}")
    print(meta + "\n" + "\n".join(lines))
    if args.out:
        Path(args.out).write_text(
            "# PPO learner: memory and time of one update\n\nRerun:\n\n```\nHF_HUB_OFFLINE=1 .venv/bin/python "
            f"benchmarks/learner_memory.py --model {args.model} --rollouts {args.rollouts} --prompt-tokens "
            f"{args.prompt_tokens} --new-tokens {args.new_tokens} --out {args.out}\n```\n\n" + meta + "\n\n"
            + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
