"""``pinqi demo``: simulate a small T1-mapping problem and run both optimization layers."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from pinqi.physics import (
    CartesianAcquisition,
    SaturationRecovery,
    birdcage_maps,
    variable_density_mask,
)
from pinqi.solvers import ConvergenceWarning, data_consistency, signal_fit

#: Saturation times of the paper (Sec. 3.1.1), in s.
PAPER_TAU = (0.5, 1.0, 1.5, 2.0, 8.0)

# (semi-axes relative to the half field of view, T1 in s, |M0|) from the outside in.
_TISSUES = (
    ((0.92, 0.80), 0.40, 0.95),  # fat / scalp
    ((0.85, 0.73), 3.00, 1.00),  # CSF
    ((0.78, 0.66), 1.60, 0.85),  # grey matter
    ((0.62, 0.50), 1.00, 0.70),  # white matter
)


def ellipse_phantom(size: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Nested-ellipse head phantom with 3 T-like T1 and M0, and two CSF-filled ventricles.

    Returns
    -------
    torch.Tensor
        Parameter maps ``(1, 3, size, size)`` = [Re M0, Im M0, R1 in 1/s]; zero M0 and
        R1 = 1 1/s outside the head. M0 has a smooth phase ramp of up to 0.3 rad.
    """
    axis = (torch.arange(size, dtype=dtype) - size / 2 + 0.5) / (size / 2)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    t1 = torch.ones(size, size, dtype=dtype)
    m0 = torch.zeros(size, size, dtype=dtype)
    for (a, b), tissue_t1, tissue_m0 in _TISSUES:
        inside = (x / b) ** 2 + (y / a) ** 2 <= 1
        t1[inside], m0[inside] = tissue_t1, tissue_m0
    for centre in (-0.15, 0.15):
        ventricle = ((x - centre) / 0.08) ** 2 + (y / 0.25) ** 2 <= 1
        t1[ventricle], m0[ventricle] = 3.0, 1.0
    phase = 0.3 * (x + y) / 2
    return torch.stack([m0 * torch.cos(phase), m0 * torch.sin(phase), 1 / t1])[None]


@dataclass(frozen=True)
class DemoResult:
    """What the demo computed; T1 errors are taken inside the head."""

    t1_mae_newton: float
    t1_mae_lbfgs: float
    seconds_newton: float
    seconds_lbfgs: float
    figure: Path


def run_demo(
    out: Path, size: int = 96, acceleration: float = 4.0, noise: float = 0.01, seed: int = 0
) -> DemoResult:
    """Simulate undersampled k-space, reconstruct images by CG, fit T1 with both solvers.

    Parameters
    ----------
    out
        Output folder; ``demo.png`` is written there.
    size
        Image size in pixels.
    acceleration
        Undersampling factor of the line masks.
    noise
        Standard deviation of the complex k-space noise (per sampled point, real and imaginary
        part each), relative to |M0| <= 1 and coils with sum |c|^2 = 1.
    seed
        Seed of every random choice (coil orientation, masks, noise).
    """
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    truth = ellipse_phantom(size).float()
    model = SaturationRecovery(PAPER_TAU)
    coils = birdcage_maps(8, (size, size), generator=generator)
    mask = variable_density_mask(
        1, model.n_tau, size, acceleration=acceleration, generator=generator
    )
    acquisition = CartesianAcquisition(coils, mask)
    clean = acquisition.forward(model(truth))
    noise_draw = torch.randn(clean.shape, dtype=clean.dtype, generator=generator)
    kspace = clean + noise * mask.unsqueeze(2) * noise_draw
    print(f"simulated k-space {tuple(kspace.shape)}: {size}x{size}, 8 coils, R={acceleration}")

    lambda_y = torch.tensor(0.02, requires_grad=True)
    prior = torch.zeros_like(acquisition.adjoint(kspace))
    images, cg_info = data_consistency(
        kspace, coils, mask, [lambda_y], [prior], max_iter=50, tol=1e-5, return_info=True
    )
    print(
        f"layer 1 (CG data consistency, lambda_y={lambda_y.item():.2f}): "
        f"{cg_info.iterations} iterations, relative residual {float(cg_info.residual.max()):.1e}"
    )

    head = truth[0, 0] != 0
    p_reg = torch.zeros_like(truth)
    p_reg[:, 2] = 1.0
    p_reg[:, 0] = images[:, -1].abs()
    lambda_p = torch.tensor(1e-3, requires_grad=True)
    maps, errors, seconds = {}, {}, {}
    for solver in ("newton", "lbfgs"):
        start = time.perf_counter()
        with warnings.catch_warnings():  # convergence is reported below
            warnings.simplefilter("ignore", ConvergenceWarning)
            p, info = signal_fit(model, images, p_reg, lambda_p, solver=solver, return_info=True)
        seconds[solver] = time.perf_counter() - start
        t1 = 1 / p[0, 2].detach().clamp(min=1e-3)
        errors[solver] = float((t1 - 1 / truth[0, 2]).abs()[head].mean())
        maps[solver] = t1
        print(
            f"layer 2 (signal fit, {solver}): {info.iterations} iterations, "
            f"{info.not_converged} pixels not converged, {seconds[solver]:.2f} s, "
            f"T1 MAE in the head {errors[solver] * 1000:.0f} ms"
        )
        if solver == "newton":
            loss = ((p - truth) ** 2).mean()
            loss.backward()
            print(
                f"implicit gradients of the T1-map loss {loss.item():.2e}: "
                f"dL/dlambda_y = {float(lambda_y.grad):.2e}, "
                f"dL/dlambda_p = {float(lambda_p.grad):.2e}"
            )

    figure = out / "demo.png"
    _plot(figure, truth, images.detach(), mask, maps["newton"], head)
    print(f"wrote {figure}")
    return DemoResult(
        errors["newton"], errors["lbfgs"], seconds["newton"], seconds["lbfgs"], figure
    )


def _plot(
    path: Path,
    truth: torch.Tensor,
    images: torch.Tensor,
    mask: torch.Tensor,
    t1: torch.Tensor,
    head: torch.Tensor,
) -> None:
    """Ground-truth T1, CG images, masks, fitted T1 and its error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t1_true = torch.where(head, 1 / truth[0, 2], 0)
    t1_fit = torch.where(head, t1, 0)
    panels = [
        ("true T1 [s]", t1_true, "magma", (0, 3)),
        ("CG image, tau=0.5 s", images[0, 0].abs(), "gray", None),
        ("CG image, tau=8 s", images[0, -1].abs(), "gray", None),
        ("masks (rows: tau)", mask[0, :, 0].float().repeat_interleave(8, 0), "gray", None),
        ("fitted T1 [s] (newton)", t1_fit, "magma", (0, 3)),
        ("T1 error [s]", t1_fit - t1_true, "coolwarm", (-0.5, 0.5)),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2))
    for ax, (title, image, cmap, limits) in zip(axes, panels, strict=True):
        shown = ax.imshow(
            image.numpy(), cmap=cmap, clim=limits, aspect="auto" if "mask" in title else None
        )
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
