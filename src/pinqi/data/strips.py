"""Readout-direction strips: exact smaller data-consistency problems for cheaper training.

With masks of whole phase-encoding lines along W, every line is fully sampled along H (the
readout). After an inverse FFT along H, the k-space of each image row depends on that row
only: rows ``start .. start + rows`` of the hybrid data are A_strip applied to the same rows of
the images, with the cropped coil maps and the same mask. Transforming them back along H with
an FFT of length ``rows`` gives the k-space of a ``rows x W`` problem that pinqi's operator
handles unchanged. The orthonormal transforms keep the noise white with the same sigma, so a
strip is a sample of the same statistics, ``H / rows`` times cheaper for every layer.
"""

from __future__ import annotations

import torch

from pinqi.physics.fft import centered_fft, centered_ifft


def readout_strip(
    sample: dict[str, torch.Tensor], start: int, rows: int
) -> dict[str, torch.Tensor]:
    """Rows ``start .. start + rows`` (along H) of a simulated sample as a sample of its own.

    Parameters
    ----------
    sample
        A sample of :class:`~pinqi.data.datasets.SimulatedDataset`: ``kspace``
        ``(n_tau, n_coils, H, W)``, ``mask`` ``(n_tau, 1, W)`` (whole lines), ``coil_maps``
        ``(n_coils, H, W)``, ``params`` ``(P, H, W)``, ``brain_mask`` and ``tissue``
        ``(H, W)``; other entries are kept as they are.
    start, rows
        First row and number of rows of the strip.

    Returns
    -------
    dict
        The same entries with H replaced by ``rows``.
    """
    height = sample["params"].shape[-2]
    if sample["mask"].shape[-2] != 1:
        raise ValueError(
            "readout strips need masks of whole lines along W (mask shape (n_tau, 1, W)), got "
            f"{tuple(sample['mask'].shape)}"
        )
    if not (0 <= start and rows >= 1 and start + rows <= height):
        raise ValueError(f"strip rows {start}..{start + rows} do not fit in H = {height}")
    hybrid = centered_ifft(sample["kspace"], dim=-2)[..., start : start + rows, :]
    strip = dict(sample)
    strip["kspace"] = centered_fft(hybrid, dim=-2)
    for name in ("coil_maps", "params", "brain_mask", "tissue"):
        strip[name] = sample[name][..., start : start + rows, :].contiguous()
    return strip


def strip_start(brain_mask: torch.Tensor, rows: int, generator: torch.Generator) -> int:
    """A random first row for a strip of ``rows`` rows centred on a row that holds the mask.

    Parameters
    ----------
    brain_mask
        Bool ``(H, W)``; where it is empty, any row may be the centre.
    rows
        Strip height.
    generator
        Source of the choice.
    """
    height = brain_mask.shape[-2]
    candidates = torch.nonzero(brain_mask.any(-1)).flatten()
    if len(candidates) == 0:
        candidates = torch.arange(height)
    centre = int(candidates[torch.randint(len(candidates), (), generator=generator)])
    return min(max(centre - rows // 2, 0), height - rows)
