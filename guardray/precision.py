"""Compute precision of the classifier's forward passes: fp32, or bf16 autocast (fp32 weights, bf16 matmuls).

`precision="auto"` picks bf16 where the hardware computes it natively and fp32 elsewhere:
- CUDA: bf16 when `torch.cuda.is_bf16_supported()` (Ampere and newer);
- CPU: bf16 when the CPU has AVX512-BF16 or AMX tiles (Intel Cooper Lake / Sapphire Rapids and newer, AMD Zen 4+).
  Without them oneDNN emulates bf16 and a forward pass gets slower, so auto stays fp32 there.

On a 2-core Sapphire Rapids VM, all-MiniLM-L6-v2 at batch 32 (benchmarks/precision.md): a training step 1.25x
(32 tokens) to 1.7x (96 tokens) faster, a forward pass 2.0x to 2.6x. Weights, optimiser state, the loss and the
scores stay fp32 (autocast), so checkpoints do not depend on the precision they were trained in.
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
