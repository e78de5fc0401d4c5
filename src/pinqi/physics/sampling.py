"""Random Cartesian undersampling masks."""

from __future__ import annotations

import torch


def variable_density_mask(
    batch_size: int,
    n_tau: int,
    n_phase: int,
    *,
    acceleration: float = 8.0,
    n_center: int | None = None,
    decay: float = 2.5,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """1D variable-density Cartesian undersampling of whole phase-encoding lines.

    Of the ``n_phase`` phase-encoding lines (along W), ``round(n_phase / acceleration)`` are
    sampled: a fully sampled block of ``n_center`` lines around the k-space centre
    (index ``n_phase // 2``, matching the centered FFT) and the rest drawn without replacement
    with a probability density ``exp(-decay x^2) + 1 / (2 acceleration)`` over
    ``x in [-1, 1)``. Every frame of every sample gets its own independent draw.

    Parameters
    ----------
    batch_size, n_tau
        Number of samples and of frames (delays) per sample.
    n_phase
        Number of phase-encoding lines (image width W).
    acceleration
        Undersampling factor R (8 in the paper), 1 <= R <= n_phase / n_center.
    n_center
        Fully sampled central lines; default: a third of the sampled lines (at least 2).
    decay
        Width parameter of the Gaussian sampling density (larger: more central lines).
    generator
        Seeded CPU generator (required); all randomness comes from it, so the same seed gives
        the same masks on every machine.
    device
        Device of the result.

    Returns
    -------
    torch.Tensor
        Bool mask ``(batch_size, n_tau, 1, n_phase)``, broadcastable to ``(batch, n_tau, H, W)``.
    """
    for name, value in (("batch_size", batch_size), ("n_tau", n_tau), ("n_phase", n_phase)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not (acceleration >= 1):
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    n_lines = max(1, round(n_phase / acceleration))
    if n_center is None:
        n_center = min(n_lines, max(2, n_lines // 3))
    if not isinstance(n_center, int) or not 0 <= n_center <= n_lines:
        raise ValueError(
            f"n_center must be an integer in [0, {n_lines}] (the {n_lines} lines that "
            f"acceleration {acceleration} leaves of {n_phase}), got {n_center!r}"
        )
    start = n_phase // 2 - n_center // 2
    center = torch.zeros(n_phase, dtype=torch.bool)
    center[start : start + n_center] = True
    x = torch.linspace(-1, 1, n_phase + 1, dtype=torch.float64)[:-1]
    density = torch.exp(-decay * x * x) + 1 / (2 * acceleration)
    density[center] = 0
    rows = batch_size * n_tau
    mask = center.expand(rows, n_phase).clone()
    n_random = n_lines - n_center
    if n_random > 0:
        picks = torch.multinomial(
            density.expand(rows, n_phase), n_random, replacement=False, generator=generator
        )
        mask.scatter_(1, picks, True)
    return mask.reshape(batch_size, n_tau, 1, n_phase).to(device)
