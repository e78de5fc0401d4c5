"""Figures of simulated samples and reconstructions (matplotlib, written as PNG)."""

from __future__ import annotations

from pathlib import Path

import torch

from pinqi.physics import CartesianAcquisition


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_sample(sample: dict[str, torch.Tensor], path: str | Path, n_frames: int = 3) -> Path:
    """Parameter maps, zero-filled undersampled images, masks and coil maps of one sample.

    Parameters
    ----------
    sample
        A sample as produced by :class:`~pinqi.data.datasets.SimulatedDataset` or read by
        :class:`~pinqi.data.datasets.H5Dataset`.
    path
        Output PNG.
    n_frames
        Number of undersampled images shown (the first, middle and last delay for 3).
    """
    plt = _pyplot()
    params, brain = sample["params"], sample["brain_mask"]
    m0 = torch.complex(params[0], params[1])
    t1 = torch.where(m0.abs() > 0.05, 1 / params[2].clamp(min=1e-3), 0)
    acquisition = CartesianAcquisition(sample["coil_maps"][None], sample["mask"][None])
    zero_filled = acquisition.adjoint(sample["kspace"][None])[0]
    tau = sample["tau"]
    frames = torch.linspace(0, len(tau) - 1, n_frames).round().long().unique().tolist()
    coils = sample["coil_maps"]

    top = [
        ("|M0| [a.u.]", m0.abs(), "gray", None),
        ("phase of M0 [rad]", torch.where(m0.abs() > 0.05, m0.angle(), 0), "twilight", (-0.6, 0.6)),
        ("T1 [s]", t1, "magma", (0, 4)),
        ("brain mask", brain.float(), "gray", (0, 1)),
    ]
    middle = [
        (f"zero-filled, tau = {float(tau[t]):g} s", zero_filled[t].abs(), "gray", None)
        for t in frames
    ]
    middle.append(
        ("masks (rows: tau)", sample["mask"][:, 0].float().repeat_interleave(8, 0), "gray", (0, 1))
    )
    bottom = [(f"|coil {c}|", coils[c].abs(), "viridis", (0, 1)) for c in range(min(4, len(coils)))]
    rows = [top, middle, bottom]
    n_cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(3.1 * n_cols, 3.1 * len(rows)))
    for row, panels in zip(axes, rows, strict=True):
        for ax in row:
            ax.axis("off")
        for ax, (title, image, cmap, limits) in zip(row, panels, strict=False):
            aspect = "auto" if title.startswith("masks") else None
            shown = ax.imshow(image.numpy(), cmap=cmap, clim=limits, aspect=aspect)
            ax.set_title(title, fontsize=9)
            fig.colorbar(shown, ax=ax, fraction=0.046)
    sigma = float(sample["noise_sigma"])
    fig.suptitle(f"simulated sample: noise sigma = {sigma:.4f}, subject {int(sample['subject'])}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
