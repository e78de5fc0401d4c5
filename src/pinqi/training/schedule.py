"""Learning-rate schedule: linear warm-up, then cosine decay (paper Sec. 3.2)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_factor: float) -> float:
    """Factor on the base learning rate at ``step``.

    Rises linearly from ``min_factor`` to 1 over ``warmup_steps``, then follows a cosine down
    to ``min_factor`` at ``total_steps``.
    """
    if step < warmup_steps:
        return min_factor + (1 - min_factor) * step / max(1, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def phase_schedule(
    step: int, pretraining_steps: int, total_steps: int, warmup_steps: int, min_factor: float
) -> float:
    """Factor on the base learning rate with its own warm-up + cosine in each training phase.

    The first ``pretraining_steps`` steps (P_theta pretraining) and the remaining ones up to
    ``total_steps`` (end-to-end training) each warm up over ``min(warmup_steps, steps / 10)``
    steps (at least one) to the full rate, then decay by :func:`warmup_cosine`.
    """
    if step < pretraining_steps:
        start, length = 0, pretraining_steps
    else:
        start, length = pretraining_steps, max(1, total_steps - pretraining_steps)
    warmup = min(warmup_steps, max(1, length // 10))
    return warmup_cosine(step - start, warmup, length, min_factor)
