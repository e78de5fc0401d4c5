"""Reduced precision for the UNets: bfloat16 autocast where the hardware has it.

Only the two regularising networks (Y_theta, P_theta) run in bfloat16; the CG layer, the
signal fit, the strengths and the loss stay in the input's precision (float32 or float64).
bfloat16 keeps float32's exponent range, so no loss scaling is needed.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Literal, get_args

import torch

#: ``auto``: bfloat16 where it pays (CUDA with bfloat16, CPUs with AVX-512 BF16 or AMX), for
#: float32 inputs only; ``bf16``: bfloat16 for float32 inputs on any device; ``fp32``: never.
UNetPrecision = Literal["auto", "bf16", "fp32"]


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 dot products natively (AVX-512 BF16 or AMX-BF16).

    Read from the flags of ``/proc/cpuinfo``; False where that file does not exist.
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_pays(device: torch.device) -> bool:
    """Whether bfloat16 UNets are faster than float32 ones on ``device``."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def check_unet_precision(value: str) -> None:
    """Raise a clear error for an unknown UNet precision."""
    if value not in get_args(UNetPrecision):
        raise ValueError(f"unet_precision must be one of {get_args(UNetPrecision)}, got {value!r}")


def uses_bf16(precision: UNetPrecision, x: torch.Tensor) -> bool:
    """Whether a UNet with ``precision`` runs in bfloat16 on the input ``x``.

    float64 inputs (gradient checks, reference runs) always stay in float64.
    """
    if x.dtype != torch.float32 or precision == "fp32":
        return False
    return precision == "bf16" or bf16_pays(x.device)


@contextlib.contextmanager
def unet_autocast(precision: UNetPrecision, x: torch.Tensor) -> Iterator[None]:
    """Autocast to bfloat16 around a UNet call on ``x`` where :func:`uses_bf16` says so.

    The caller casts the UNet's output back to ``x.dtype`` after the block.
    """
    if uses_bf16(precision, x):
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            yield
    else:
        with torch.autocast(x.device.type, enabled=False):
            yield
