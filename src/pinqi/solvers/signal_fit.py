"""Layer 2: the pixel-wise signal fit with an implicit backward (paper Eq. 9, 13, 14, Fig. 3)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch

from pinqi._checks import check_complex, check_parameter_regularization
from pinqi.physics.signal_models import SignalModel, stack_complex
from pinqi.solvers.bounds import TrigBounds
from pinqi.solvers.cg import conjugate_gradient
from pinqi.solvers.convergence import ConvergenceWarning, SolverInfo, warn_if_not_converged
from pinqi.solvers.fit_objective import FitObjective
from pinqi.solvers.lbfgs import lbfgs_solve
from pinqi.solvers.newton import newton_solve
from pinqi.solvers.small_linalg import add_diagonal, cholesky_solve, restrict_to_free

Solver = Literal["newton", "lbfgs"]

_DEFAULT_MAX_ITER = {"newton": 50, "lbfgs": 500}


def default_tolerance(dtype: torch.dtype) -> float:
    """Default per-pixel gradient tolerance of the signal fit for a real ``dtype``."""
    return 1e-9 if dtype == torch.float64 else 1e-6


@dataclass(frozen=True)
class _FitSettings:
    model: SignalModel
    solver: Solver
    max_iter: int
    tol: float
    backward_max_iter: int
    backward_tol: float
    warn: bool
    sync_free: bool


class _SignalFit(torch.autograd.Function):
    """p* = argmin_p F(p), F = ||q(p) - y||^2 + sum_k lam_k (p_k - p_reg,k)^2, per pixel.

    Optimality: dF/dp (p*) = 0. By the implicit function theorem (Eq. 9), for an incoming
    gradient v = dL/dp*, with w = H^-1 v and H = d^2F/dp^2 (p*), the gradients are
    dL/dalpha = -(d^2F/dalpha dp)^T w for alpha in (y, p_reg, lam):

    - dL/dy = 2 J w (complex, PyTorch's convention dL/dRe + i dL/dIm; J = dq/dp at p*),
    - dL/dp_reg = 2 lam w,
    - dL/dlam_k = -2 sum (p*_k - p_reg,k) w_k (per batch element and parameter).

    ``newton`` forms H exactly per pixel (Gauss-Newton matrix plus the model's second
    derivatives) and solves the P x P systems directly. Components of p* that lie on a bound
    are held by it: their rows and columns are dropped from H, so their gradient is zero and the
    free components follow the reduced system. ``lbfgs`` solves H w = v by CG with
    Hessian-vector products from autograd of the rebuilt objective (the paper's Fig. 3).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        settings: _FitSettings,
        images: torch.Tensor,
        p_reg: torch.Tensor,
        lam: torch.Tensor,
        p0: torch.Tensor,
    ) -> tuple[torch.Tensor, SolverInfo]:
        model = settings.model
        objective = FitObjective(
            model, stack_complex(images.detach()), p_reg.detach(), lam.detach()
        )
        if settings.solver == "newton":
            lower, upper = TrigBounds(model.bounds).box(p0)
            p, info = newton_solve(
                objective,
                p0,
                lower,
                upper,
                max_iter=settings.max_iter,
                tol=settings.tol,
                sync_free=settings.sync_free,
            )
        else:
            p, info = lbfgs_solve(
                objective,
                p0,
                TrigBounds(model.bounds),
                max_iter=settings.max_iter,
                tol=settings.tol,
            )
        ctx.settings = settings
        ctx.save_for_backward(images, p_reg, lam, p)
        ctx.mark_non_differentiable(info.residual, info.converged)
        return p, info

    @staticmethod
    def backward(ctx: Any, grad_p: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        images, p_reg, lam, p = ctx.saved_tensors
        settings: _FitSettings = ctx.settings
        if settings.solver == "newton":
            grads = _exact_backward(settings, images, p_reg, lam, p, grad_p)
        else:
            grads = _hessian_vector_backward(settings, images, p_reg, lam, p, grad_p)
        needs = ctx.needs_input_grad
        return (
            None,
            *(g if need else None for g, need in zip(grads, needs[1:4], strict=True)),
            None,
        )


def _cross_gradients(
    model: SignalModel, p: torch.Tensor, p_reg: torch.Tensor, lam: torch.Tensor, w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dL/dy, dL/dp_reg and dL/dlam from w = H^-1 dL/dp* (see :class:`_SignalFit`)."""
    grad_images = 2 * model.jacobian_vector_product(p, w)
    grad_p_reg = 2 * lam.unsqueeze(-1) * w
    # summed in float64: a float32 sum over many pixels loses the gradient's last digits
    grad_lam = -2 * ((p - p_reg) * w).sum(2, dtype=torch.float64).to(p.dtype)
    return grad_images, grad_p_reg, grad_lam


def _exact_backward(
    settings: _FitSettings,
    images: torch.Tensor,
    p_reg: torch.Tensor,
    lam: torch.Tensor,
    p: torch.Tensor,
    grad_p: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Implicit backward with the exact per-pixel Hessian (no CG)."""
    model = settings.model
    objective = FitObjective(model, stack_complex(images), p_reg, lam)
    _, gauss_newton, hessian = objective.derivatives(p, objective.residual(p))
    lower, upper = TrigBounds(model.bounds).box(p)
    on_bound = (p <= lower) | (p >= upper)
    w, positive = cholesky_solve(*restrict_to_free(hessian, grad_p, on_bound))
    # sync-free: the fallback is computed for every pixel instead of testing whether one needs it
    if settings.sync_free or not bool(positive.all()):
        if settings.warn and not bool(positive.all()):
            warnings.warn(
                "signal_fit backward: the Hessian is not positive definite at "
                f"{int((~positive).sum())} pixel(s) (not a strict minimum); their gradient "
                "uses the damped Gauss-Newton matrix",
                ConvergenceWarning,
                stacklevel=3,
            )
        diagonal = torch.diagonal(gauss_newton, dim1=1, dim2=2).mT
        damping = torch.finfo(p.dtype).eps ** 0.5 * (1 + diagonal.mean(1, keepdim=True))
        damped = add_diagonal(gauss_newton, damping.expand_as(diagonal))
        fallback, _ = cholesky_solve(*restrict_to_free(damped, grad_p, on_bound))
        w = torch.where(positive.unsqueeze(1), w, fallback)
    return _cross_gradients(model, p, p_reg, lam, w)


def _hessian_vector_backward(
    settings: _FitSettings,
    images: torch.Tensor,
    p_reg: torch.Tensor,
    lam: torch.Tensor,
    p: torch.Tensor,
    grad_p: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Implicit backward of the lbfgs solution by CG on autograd Hessian-vector products.

    L-BFGS solves for z with p = c + h sin(z) (:class:`~pinqi.solvers.bounds.TrigBounds`), so
    its solution is a stationary point of G(z) = F(p(z)); near a bound, where cos(z) -> 0, it
    need not be one of F (dF/dp != 0), and the p-space Hessian would give wrong gradients.
    The implicit function theorem is therefore applied to dG/dz = 0 (the paper's Fig. 3 in the
    solver's variables): with D = diag(h cos z), w_z = (d^2G/dz^2)^-1 D v and, since
    d^2G/dalpha dz = D d^2F/dalpha dp, dL/dalpha = -(d^2F/dalpha dp)^T (D w_z). At interior
    stationary points this equals the p-space formula; a component pressed against a bound
    gets a vanishing gradient, as with ``newton``.
    """
    bounds = TrigBounds(settings.model.bounds)
    with torch.enable_grad():
        # no margin: a component on a bound sits at cos(z) = 0 and gets no gradient
        z = bounds.unconstrain(p.detach(), margin=0.0).requires_grad_(True)
        objective = FitObjective(
            settings.model, stack_complex(images.detach()), p_reg.detach(), lam.detach()
        )
        total = objective.value(bounds.constrain(z)).sum()
        (grad_z,) = torch.autograd.grad(total, z, create_graph=True)

        def hessian_vector(v: torch.Tensor) -> torch.Tensor:
            (hv,) = torch.autograd.grad(grad_z, z, v, retain_graph=True)
            return hv

        slope = bounds.derivative(z.detach())
        w_z, info = conjugate_gradient(
            hessian_vector,
            slope * grad_p,
            max_iter=settings.backward_max_iter,
            tol=settings.backward_tol,
        )
    if settings.warn:
        warn_if_not_converged(info, "signal_fit backward CG", "batch element", stacklevel=4)
    return _cross_gradients(settings.model, p, p_reg, lam, slope * w_z)


def signal_fit(
    model: SignalModel,
    images: torch.Tensor,
    p_reg: torch.Tensor,
    lam: torch.Tensor | float,
    *,
    solver: Solver = "newton",
    p0: torch.Tensor | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    backward_max_iter: int = 100,
    backward_tol: float | None = None,
    return_info: bool = False,
    warn: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, SolverInfo]:
    """Regularized pixel-wise fit of a signal model (paper Eq. 13/14).

    Returns p* = argmin_p ||q(p) - y||^2 + sum_k lam_k (p_k - p_reg,k)^2, independently per
    pixel, inside the model's bounds (for the relaxation models Re M0, Im M0 in (-2, 2), R1 in
    (-1, 20) 1/s), differentiable with respect to ``images``, ``p_reg`` and ``lam`` by the
    implicit function theorem (Eq. 9). The penalty acts on all parameter channels.

    Parameters
    ----------
    model
        Signal model q, e.g. :class:`~pinqi.physics.SaturationRecovery`.
    images
        Complex images y ``(batch, n_tau, H, W)``.
    p_reg
        Real regularizing parameter maps ``(batch, P, H, W)``.
    lam
        Regularization strength >= 0: a real scalar, ``(batch,)`` (the same for every
        parameter) or ``(batch, P)`` (one per parameter).
    solver
        ``"newton"`` (default): batched per-pixel projected Newton / Levenberg-Marquardt with
        the model's analytic derivatives, exact per-pixel Hessian in the backward; a pixel whose
        solution lies on a bound gets zero gradient in that component. ``"lbfgs"``: the paper's
        method, L-BFGS on trigonometrically transformed variables, backward by CG on autograd
        Hessian-vector products; needs only the model's forward.
    p0
        Start ``(batch, P, H, W)``; default ``p_reg``. Not differentiated.
    max_iter
        Iteration limit; default 50 for newton, 500 for lbfgs.
    tol
        Per-pixel tolerance on the norm of the projected gradient dF/dp; default 1e-6 for
        float32 and 1e-9 for float64. ``newton`` also stops a pixel whose Newton step has
        fallen below rounding.
    backward_max_iter, backward_tol
        CG settings of the lbfgs backward (relative residual; default 1e-6 for float32,
        1e-12 for float64).
    return_info
        Also return a :class:`~pinqi.solvers.SolverInfo`.
    warn
        Warn when pixels stop before ``tol``, and (newton) when the backward meets a Hessian
        that is not positive definite (off for unrolled networks with fixed iteration counts).

    Returns
    -------
    torch.Tensor or (torch.Tensor, SolverInfo)
        Parameter maps ``(batch, P, H, W)`` (and the convergence report).

    Warns
    -----
    ConvergenceWarning
        If some pixels did not reach ``tol`` within ``max_iter`` iterations.
    """
    if not isinstance(model, SignalModel):
        raise TypeError(f"model must be a pinqi SignalModel, got {type(model).__name__}")
    if solver not in _DEFAULT_MAX_ITER:
        raise ValueError(f"solver must be 'newton' or 'lbfgs', got {solver!r}")
    images = check_complex("images", images, 4, f"(batch, n_tau={model.n_tau}, H, W)")
    p_reg = model.check_parameters("p_reg", p_reg)
    batch, _, height, width = images.shape
    expected = (batch, model.n_params, height, width)
    if images.shape[1] != model.n_tau:
        raise ValueError(
            f"images has {images.shape[1]} frames but the signal model has n_tau={model.n_tau}"
        )
    if tuple(p_reg.shape) != expected:
        raise ValueError(
            f"p_reg has shape {tuple(p_reg.shape)} but images {tuple(images.shape)} imply "
            f"(batch, n_params, H, W) = {expected}"
        )
    if images.real.dtype != p_reg.dtype:
        raise ValueError(
            f"images ({images.dtype}) and p_reg ({p_reg.dtype}) must have matching precision"
        )
    lam = check_parameter_regularization(
        "lam", lam, batch, model.n_params, p_reg.dtype, p_reg.device
    )
    if p0 is None:
        p0 = p_reg
    else:
        p0 = model.check_parameters("p0", p0)
        if p0.shape != p_reg.shape:
            raise ValueError(f"p0 has shape {tuple(p0.shape)}, expected {expected}")
    if (max_iter is not None and max_iter < 1) or (tol is not None and not tol >= 0):
        raise ValueError(f"need max_iter >= 1 and tol >= 0, got {max_iter} and {tol}")
    p, info = solve_signal_fit(
        model,
        images,
        p_reg,
        lam,
        p0,
        solver=solver,
        max_iter=max_iter,
        tol=tol,
        backward_max_iter=backward_max_iter,
        backward_tol=backward_tol,
        warn=warn,
        sync_free=False,
    )
    if warn:
        warn_if_not_converged(info, f"signal_fit ({solver})", "pixel")
    return (p, info) if return_info else p


def solve_signal_fit(
    model: SignalModel,
    images: torch.Tensor,
    p_reg: torch.Tensor,
    lam: torch.Tensor,
    p0: torch.Tensor,
    *,
    solver: Solver = "newton",
    max_iter: int | None = None,
    tol: float | None = None,
    backward_max_iter: int = 100,
    backward_tol: float | None = None,
    warn: bool = False,
    sync_free: bool | None = None,
) -> tuple[torch.Tensor, SolverInfo]:
    """:func:`signal_fit` without input checks.

    For networks that validate their inputs once and call the layer many times: ``images``
    complex ``(batch, n_tau, H, W)``, ``p_reg`` and ``p0`` real ``(batch, P, H, W)`` of the
    matching precision, ``lam`` ``(batch, P)`` on their device. ``warn`` only concerns the
    backward. ``sync_free`` (newton): exactly ``max_iter`` iterations on every pixel,
    converged ones frozen by a mask, and nothing read back in forward or backward
    (:func:`~pinqi.solvers.newton.newton_solve`); False gathers the running pixels into
    smaller arrays as they converge, with host reads (2-3x faster on a CPU, where a read costs
    nothing). None (default): sync-free on accelerators, compacting on the CPU.
    """
    if sync_free is None:
        sync_free = images.device.type != "cpu"
    batch, n_params = p_reg.shape[:2]
    dtype = p_reg.dtype
    settings = _FitSettings(
        model=model,
        solver=solver,
        max_iter=_DEFAULT_MAX_ITER[solver] if max_iter is None else max_iter,
        tol=default_tolerance(dtype) if tol is None else tol,
        backward_max_iter=backward_max_iter,
        backward_tol=(1e-12 if dtype == torch.float64 else 1e-6)
        if backward_tol is None
        else backward_tol,
        warn=warn,
        sync_free=sync_free,
    )
    p, info = _SignalFit.apply(
        settings,
        images.reshape(batch, images.shape[1], -1),
        p_reg.reshape(batch, n_params, -1),
        lam,
        p0.detach().reshape(batch, n_params, -1),
    )
    return p.reshape(p_reg.shape), info
