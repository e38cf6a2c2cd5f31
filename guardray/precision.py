"""Compute precision of the classifier's forward passes: fp32 or bf16.

`precision="auto"` picks bf16 where the hardware computes it natively and fp32 elsewhere:
- CUDA: bf16 when `torch.cuda.is_bf16_supported()` (Ampere and newer);
- CPU: bf16 when the CPU has AVX512-BF16 or AMX tiles (Intel Cooper Lake / Sapphire Rapids and newer, AMD Zen 4+).
  Without them bf16 is emulated in software, which does not pay, so auto stays fp32 there.

Training uses autocast (fp32 master weights, optimiser state and loss, bf16 matmuls), so checkpoints are fp32
whatever they were trained in; scoring (GuardClassifier) casts the weights themselves to bf16, since autocast would
re-cast them on every call. On a 2-core Sapphire Rapids VM (benchmarks/precision.md): MiniLM training ~1.5x the
samples/s of fp32; scoring 2.56x the texts/s on moderation-length texts, 1.5-2x on short ones, and a lone short
text 5.8 ms against 6.3. The demo checkpoint's scores moved by at most 0.023 (mean 0.0013), 6 of 1,680 moderation
decisions flipped, AUPRC within 0.001 on every set; a MiniLM trained in bf16 scored within 0.002 F1 / AUPRC of the
fp32 one on all five shared sets.
"""
from __future__ import annotations

import contextlib
import functools

PRECISIONS = ("auto", "fp32", "bf16")


@functools.cache
def cpu_native_bf16() -> bool:
    """True when this CPU computes bf16 matmuls natively (AVX512-BF16 or AMX tiles)."""
    import torch
    cpu = torch.cpu
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except RuntimeError:  # an older or unusual build: treat as absent
            pass
    return False


def resolve(precision: str, device="cpu") -> str:
    """"fp32" or "bf16" for `precision` ("auto" | "fp32" | "bf16") on `device`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if str(device).startswith("cuda"):
        import torch
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_native_bf16() else "fp32"


def autocast(device="cpu", precision: str = "auto"):
    """A context manager running the forward pass at `precision` on `device` (a no-op for fp32)."""
    if resolve(precision, device) == "fp32":
        return contextlib.nullcontext()
    import torch
    return torch.autocast(device_type="cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16)
