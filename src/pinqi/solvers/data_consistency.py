"""Layer 1: data consistency by CG with an implicit backward (paper Eq. 12, 15-18)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from pinqi._checks import check_regularization, real_dtype_of
from pinqi.physics.acquisition import CartesianAcquisition
from pinqi.solvers.cg import conjugate_gradient, per_sample
from pinqi.solvers.convergence import SolverInfo, warn_if_not_converged


def _normal_operator(
    acquisition: CartesianAcquisition, lambdas: Sequence[torch.Tensor]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The Hermitian operator H = A^H A + (sum_i lambda_i) I of the normal equations."""
    if not lambdas:
        return acquisition.gram
    total = per_sample(sum(lambdas), acquisition.coil_maps)

    def operator(y: torch.Tensor) -> torch.Tensor:
        return acquisition.gram(y) + total * y

    return operator


def _normal_rhs(
    kspace_adjoint: torch.Tensor,
    lambdas: Sequence[torch.Tensor],
    priors: Sequence[torch.Tensor],
) -> torch.Tensor:
    """The right-hand side b = A^H k + sum_i lambda_i y_i of the normal equations."""
    rhs = kspace_adjoint
    for lam, prior in zip(lambdas, priors, strict=True):
        rhs = rhs + per_sample(lam, prior) * prior
    return rhs


def _real_inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Re <a, b> per batch element ``(batch,)``, summed in double precision.

    Re(conj(a) b) = Re a Re b + Im a Im b per element in the working precision; only the sum
    runs in float64 (no complex128 copies of the images).
    """
    products = torch.view_as_real(a) * torch.view_as_real(b)
    return products.flatten(1).sum(1, dtype=torch.float64).to(a.real.dtype)


class _ImplicitDataConsistency(torch.autograd.Function):
    """Solve (A^H A + sum_i l_i I) y = A^H k + sum_i l_i y_i; implicit backward.

    The solution y* minimises F(y) = ||A y - k||^2 + sum_i l_i ||y - y_i||^2 (Eq. 15), so
    H y* = b with the Hermitian H = A^H A + (sum_i l_i) I. With the incoming gradient v = dL/dy*,
    the backward solves H g = v by CG (Eq. 16) and returns (Eq. 17, 18, PyTorch's convention
    for complex gradients, dL/dRe + i dL/dIm):

    - dL/dy_i = l_i g,
    - dL/dl_i = Re <g, y_i - y*> per batch element,
    - dL/dk   = A g,
    - dL/dc_j = -sum_tau [F^H (A_j y* - S k_j) conj(g) + F^H (A_j g) conj(y*)].

    With ``given_adjoint``, the ``kspace`` input is A^H k itself (computed once by the caller,
    e.g. once per network forward): then dL/d(A^H k) = g, and dL/dc_j keeps only the terms of
    A^H A; autograd adds those of A^H k through the caller's adjoint.

    Nothing of the forward iterations is stored, so memory does not grow with ``max_iter``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        n: int,
        max_iter: int,
        tol: float,
        warn: bool,
        early_exit: bool,
        given_adjoint: bool,
        mask: torch.Tensor,
        x0: torch.Tensor | None,
        kspace: torch.Tensor,
        coil_maps: torch.Tensor,
        *lambdas_and_priors: torch.Tensor,
    ) -> tuple[torch.Tensor, SolverInfo]:
        lambdas, priors = lambdas_and_priors[:n], lambdas_and_priors[n:]
        acquisition = CartesianAcquisition.unchecked(coil_maps, mask)
        operator = _normal_operator(acquisition, lambdas)
        kspace_adjoint = kspace if given_adjoint else acquisition.adjoint(kspace)
        rhs = _normal_rhs(kspace_adjoint, lambdas, priors)
        y, info = conjugate_gradient(
            operator, rhs, x0, max_iter=max_iter, tol=tol, early_exit=early_exit
        )
        ctx.save_for_backward(kspace, coil_maps, mask, y, *lambdas_and_priors)
        ctx.n, ctx.max_iter, ctx.tol, ctx.warn = n, max_iter, tol, warn
        ctx.early_exit, ctx.given_adjoint = early_exit, given_adjoint
        ctx.mark_non_differentiable(info.residual, info.converged)
        return y, info

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        kspace, coil_maps, mask, y, *lambdas_and_priors = ctx.saved_tensors
        n = ctx.n
        lambdas, priors = lambdas_and_priors[:n], lambdas_and_priors[n:]
        acquisition = CartesianAcquisition.unchecked(coil_maps, mask)
        operator = _normal_operator(acquisition, lambdas)
        g, info = conjugate_gradient(
            operator, grad_y, max_iter=ctx.max_iter, tol=ctx.tol, early_exit=ctx.early_exit
        )
        if ctx.warn:
            warn_if_not_converged(info, "data_consistency backward CG", "batch element")
        needs = ctx.needs_input_grad
        grad_k = None
        if needs[8]:
            grad_k = g if ctx.given_adjoint else acquisition.forward(g)
        grad_c = None
        if needs[9]:
            measured = None if ctx.given_adjoint else kspace
            grad_c = acquisition.coil_map_gradient(y, g, measured)
        grad_lambdas = [
            _real_inner(g, prior - y) if needs[10 + i] else None for i, prior in enumerate(priors)
        ]
        grad_priors = [
            per_sample(lam, g) * g if needs[10 + n + i] else None for i, lam in enumerate(lambdas)
        ]
        return (None,) * 8 + (grad_k, grad_c, *grad_lambdas, *grad_priors)


def data_consistency(
    kspace: torch.Tensor,
    coil_maps: torch.Tensor,
    mask: torch.Tensor,
    lambdas: Sequence[torch.Tensor | float],
    priors: Sequence[torch.Tensor],
    *,
    max_iter: int = 50,
    tol: float | None = None,
    x0: torch.Tensor | None = None,
    implicit: bool = True,
    return_info: bool = False,
    warn: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, SolverInfo]:
    """Data-consistent images: argmin_y ||A y - k||^2 + sum_i lambda_i ||y - y_i||^2.

    Solves (A^H A + sum_i lambda_i I) y = A^H k + sum_i lambda_i y_i (paper Eq. 12, 15) with
    A = S F C (:class:`~pinqi.physics.CartesianAcquisition`) by batched complex CG.
    Differentiable with respect to ``kspace``, ``coil_maps``, every ``lambdas[i]`` and every
    ``priors[i]``.

    Parameters
    ----------
    kspace
        Complex k-space ``(batch, n_tau, n_coils, H, W)``.
    coil_maps
        Complex coil sensitivities ``(batch, n_coils, H, W)``.
    mask
        0/1 sampling mask broadcastable to ``(batch, n_tau, H, W)``; not differentiated.
    lambdas
        Regularization strengths lambda_i >= 0, each a real scalar or ``(batch,)`` tensor.
    priors
        Complex prior images y_i ``(batch, n_tau, H, W)``, as many as ``lambdas``.
    max_iter
        Maximum number of CG iterations (forward and backward solve each).
    tol
        Relative residual tolerance ``||H y - b|| / ||b||`` per batch element; default 1e-5 for
        complex64 (CG stagnates near 1e-6 there) and 1e-10 for complex128.
    x0
        Warm start ``(batch, n_tau, H, W)``; zero if None. Not differentiated.
    implicit
        If True (default), the backward is implicit (one more CG solve, memory independent of
        ``max_iter``). If False, autograd differentiates through the unrolled CG iterations
        (the reference; memory grows with the iterations).
    return_info
        Also return a :class:`~pinqi.solvers.SolverInfo` of the forward solve.
    warn
        Warn when a solve (forward or backward) stops before ``tol``; unrolled networks that
        run a fixed number of iterations by design turn this off.

    Returns
    -------
    torch.Tensor or (torch.Tensor, SolverInfo)
        Complex images ``(batch, n_tau, H, W)`` (and the convergence report).

    Warns
    -----
    ConvergenceWarning
        If a batch element did not reach ``tol`` within ``max_iter`` iterations.
    """
    acquisition = CartesianAcquisition(coil_maps, mask)
    kspace = acquisition.check_kspace("kspace", kspace)
    if len(lambdas) != len(priors):
        raise ValueError(
            f"lambdas and priors must have the same length, got {len(lambdas)} and {len(priors)}"
        )
    batch = acquisition.image_shape[0]
    real = real_dtype_of(kspace.dtype)
    lams = [
        check_regularization(f"lambdas[{i}]", lam, batch, real, kspace.device)
        for i, lam in enumerate(lambdas)
    ]
    ys = [acquisition.check_images(f"priors[{i}]", prior) for i, prior in enumerate(priors)]
    if x0 is not None:
        x0 = acquisition.check_images("x0", x0)
    if tol is None:
        tol = 1e-10 if kspace.dtype == torch.complex128 else 1e-5
    if max_iter < 1 or not tol >= 0:
        raise ValueError(f"need max_iter >= 1 and tol >= 0, got {max_iter} and {tol}")
    y, info = solve_data_consistency(
        acquisition,
        kspace,
        lams,
        ys,
        max_iter=max_iter,
        tol=tol,
        x0=x0,
        implicit=implicit,
        warn=warn,
        early_exit=True,
    )
    if warn:
        warn_if_not_converged(info, "data_consistency CG", "batch element")
    return (y, info) if return_info else y


def solve_data_consistency(
    acquisition: CartesianAcquisition,
    kspace: torch.Tensor,
    lambdas: Sequence[torch.Tensor],
    priors: Sequence[torch.Tensor],
    *,
    max_iter: int,
    tol: float,
    x0: torch.Tensor | None = None,
    implicit: bool = True,
    warn: bool = False,
    early_exit: bool | None = None,
    kspace_adjoint: torch.Tensor | None = None,
) -> tuple[torch.Tensor, SolverInfo]:
    """:func:`data_consistency` without input checks.

    For networks that validate their inputs once at their entry point and call the layer many
    times. ``lambdas`` are ``(batch,)`` tensors on the data's device and dtype, ``priors`` and
    ``x0`` complex ``(batch, n_tau, H, W)``; ``warn`` only concerns the backward solve.
    ``kspace_adjoint``, if given, is ``acquisition.adjoint(kspace)`` computed once by the
    caller for all its layers (then ``kspace`` is not read); gradients reach ``kspace`` and the
    coil maps through it as through the layer's own adjoint.
    Without ``early_exit`` both CG solves run ``max_iter`` iterations (converged elements
    frozen on the device) and never read a value back (no host synchronisation; capturable);
    with it they stop once all elements have converged. None (default): early exits on the
    CPU, where reading a value costs nothing, none on accelerators.
    """
    if early_exit is None:
        early_exit = kspace.device.type == "cpu"
    if x0 is not None:
        x0 = x0.detach()
    if implicit:
        return _ImplicitDataConsistency.apply(
            len(lambdas),
            max_iter,
            tol,
            warn,
            early_exit,
            kspace_adjoint is not None,
            acquisition.mask,
            x0,
            kspace if kspace_adjoint is None else kspace_adjoint,
            acquisition.coil_maps,
            *lambdas,
            *priors,
        )
    operator = _normal_operator(acquisition, lambdas)
    if kspace_adjoint is None:
        kspace_adjoint = acquisition.adjoint(kspace)
    rhs = _normal_rhs(kspace_adjoint, lambdas, priors)
    return conjugate_gradient(operator, rhs, x0, max_iter=max_iter, tol=tol, early_exit=early_exit)
