"""Figures of simulated samples and reconstructions (matplotlib, written as PNG)."""

from __future__ import annotations

from pathlib import Path

import torch

from pinqi.physics import CartesianAcquisition


def pyplot():
    """Matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _show(fig, ax, image: torch.Tensor, title: str, cmap: str, limits, aspect=None) -> None:
    """One image panel with title and colour bar."""
    shown = ax.imshow(image.numpy(), cmap=cmap, clim=limits, aspect=aspect)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.colorbar(shown, ax=ax, fraction=0.046)


def save_png(plt, fig, path: str | Path, dpi: int = 90) -> Path:
    """Write the figure as PNG and close it."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


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
    plt = pyplot()
    params, brain = sample["params"], sample["brain_mask"]
    m0 = torch.complex(params[0], params[1])
    t1 = torch.where(m0.abs() > 0.05, 1 / params[-1].clamp(min=1e-3), 0)
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
            _show(fig, ax, image, title, cmap, limits, aspect)
    sigma = float(sample["noise_sigma"])
    fig.suptitle(f"simulated sample: noise sigma = {sigma:.4f}, subject {int(sample['subject'])}")
    return save_png(plt, fig, path)


def plot_maps(
    path: str | Path,
    truth: torch.Tensor,
    mask: torch.Tensor,
    predictions: dict[str, torch.Tensor],
) -> Path:
    """|M0| and T1 of each method with error maps, like the paper's Fig. 4.

    Parameters
    ----------
    truth
        ``(3, H, W)`` true parameters.
    mask
        ``(H, W)`` brain mask (errors shown inside it).
    predictions
        Method name -> ``(3, H, W)``.
    """
    from pinqi.metrics import t1_from_r1

    plt = pyplot()
    columns = {"ground truth": truth, **predictions}
    fig, axes = plt.subplots(4, len(columns), figsize=(3.2 * len(columns), 12.4), squeeze=False)
    true_m0 = torch.complex(truth[0], truth[1]).abs()
    true_t1 = t1_from_r1(truth[-1])
    inside = mask.float()
    for col, (name, p) in enumerate(columns.items()):
        m0, t1 = torch.complex(p[0], p[1]).abs(), t1_from_r1(p[-1])
        panels = [
            (f"{name}\n|M0|", m0 * (true_m0 > 0), "gray", (0, 1.1)),
            ("|M0| error", (m0 - true_m0) * inside, "coolwarm", (-0.2, 0.2)),
            ("T1 [s]", t1 * inside, "magma", (0, 4)),
            ("T1 error [s]", (t1 - true_t1) * inside, "coolwarm", (-0.5, 0.5)),
        ]
        for row, (title, image, cmap, limits) in enumerate(panels):
            ax = axes[row, col]
            ax.axis("off")
            if name == "ground truth" and "error" in title:
                continue
            _show(fig, ax, image, title, cmap, limits)
    return save_png(plt, fig, path)


def plot_distributions(path: str | Path, rows: list[dict]) -> Path:
    """Per-sample T1 nRMSE and MAE of every method with their means, like the paper's Fig. 5."""
    plt = pyplot()
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.5 * len(methods), 4))
    for ax, (key, label) in zip(
        axes, (("t1_nrmse", "T1 nRMSE"), ("t1_mae", "T1 MAE [s]")), strict=True
    ):
        values = [[r[key] for r in rows if r["method"] == m] for m in methods]
        ax.boxplot(values, showfliers=False)
        for i, v in enumerate(values, start=1):
            jitter = torch.linspace(-0.15, 0.15, len(v)).tolist() if len(v) > 1 else [0.0]
            ax.scatter([i + j for j in jitter], v, s=10, alpha=0.6)
            mean = sum(v) / len(v)
            ax.annotate(
                f"{mean:.3f}", (i, mean), textcoords="offset points", xytext=(12, 0), fontsize=8
            )
        ax.set_xticks(range(1, len(methods) + 1), methods, fontsize=8, rotation=30, ha="right")
        ax.set_title(label)
    return save_png(plt, fig, path)


def plot_parameter_maps(path: str | Path, params: torch.Tensor) -> Path:
    """|M0|, phase and T1 of one reconstruction ``(3, H, W)``."""
    from pinqi.metrics import t1_from_r1

    plt = pyplot()
    m0 = torch.complex(params[0], params[1])
    panels = [
        ("|M0| [a.u.]", m0.abs(), "gray", None),
        ("phase of M0 [rad]", m0.angle(), "twilight", (-3.15, 3.15)),
        ("T1 [s]", t1_from_r1(params[-1]) * (m0.abs() > 0.05), "magma", (0, 4)),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.3))
    for ax, (title, image, cmap, limits) in zip(axes, panels, strict=True):
        _show(fig, ax, image, title, cmap, limits)
    return save_png(plt, fig, path)


def plot_training_curve(
    metrics_csv: str | Path, path: str | Path, baseline_t1_nrmse: float | None = None
) -> Path:
    """Training loss and validation T1 nRMSE over the steps of a run's ``logs/metrics.csv``.

    Parameters
    ----------
    metrics_csv
        The CSV log of ``pinqi train``.
    path
        Output PNG.
    baseline_t1_nrmse
        The non-learned baseline's validation T1 nRMSE, drawn as a horizontal line.
    """
    import csv

    plt = pyplot()
    rows = list(csv.DictReader(open(metrics_csv)))
    train = [(int(r["step"]), float(r["train_loss"])) for r in rows if r.get("train_loss")]
    val = [(int(r["step"]), float(r["val_t1_nrmse"])) for r in rows if r.get("val_t1_nrmse")]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps, losses = zip(*train, strict=True)
    window = max(1, len(losses) // 50)
    smooth = (
        torch.tensor(losses).unfold(0, window, 1).mean(1).tolist()
        if len(losses) > window
        else losses
    )
    ax_loss.semilogy(steps, losses, alpha=0.3, label="per step")
    ax_loss.semilogy(steps[window - 1 :], smooth, label=f"mean of {window}")
    ax_loss.set_xlabel("step")
    ax_loss.set_title("training loss")
    ax_loss.legend(fontsize=8)
    if val:
        ax_val.plot(*zip(*val, strict=True), marker="o", label="PINQI")
    if baseline_t1_nrmse is not None:
        ax_val.axhline(baseline_t1_nrmse, color="gray", linestyle="--", label="CG-SENSE + fit")
    ax_val.set_xlabel("step")
    ax_val.set_title("validation T1 nRMSE (brain mask)")
    ax_val.legend(fontsize=8)
    return save_png(plt, fig, path)
