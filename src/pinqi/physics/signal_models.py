"""Pixel-wise signal models q(p) that map parameter maps to qualitative images.

Conventions used everywhere in pinqi
------------------------------------
- parameter maps ``p``: real ``(batch, n_params, H, W)``; for the relaxation models here
  ``n_params = 3`` with channels ``[Re M0, Im M0, R1]``, M0 in arbitrary units and
  ``R1 = 1 / T1`` in 1/s.
- images ``q(p)``: complex ``(batch, n_tau, H, W)``, one frame per delay.

The spatial dimensions may be any trailing shape (the solvers flatten them to one pixel axis),
so a model maps ``(batch, n_params, *spatial)`` to ``(batch, n_tau, *spatial)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from pinqi._checks import check_finite, check_tensor

#: Bounds of Sec. 3.2 of the paper: Re M0, Im M0 in (-2, 2) a.u., R1 in (-1, 20) 1/s.
RELAXATION_BOUNDS: tuple[tuple[float, float], ...] = ((-2.0, 2.0), (-2.0, 2.0), (-1.0, 20.0))


class SignalModel(torch.nn.Module, ABC):
    """A differentiable pixel-wise signal model with analytic first and second derivatives.

    Subclasses define :meth:`forward`, :meth:`jacobian` and :meth:`hessian`; the solvers in
    :mod:`pinqi.solvers` only use this interface, so any model that implements it can be fitted
    and differentiated through.

    Attributes
    ----------
    parameter_names
        Name of each parameter channel, length ``n_params``.
    bounds
        ``(lower, upper)`` per parameter: the open box the signal fit keeps its solution in.
    """

    parameter_names: tuple[str, ...]
    bounds: tuple[tuple[float, float], ...]

    @property
    def n_params(self) -> int:
        """Number of real parameters per pixel."""
        return len(self.parameter_names)

    @property
    @abstractmethod
    def n_tau(self) -> int:
        """Number of frames (delays) the model produces."""

    @abstractmethod
    def forward(self, p: torch.Tensor) -> torch.Tensor:
        """Evaluate the model.

        Parameters
        ----------
        p
            Real parameters ``(batch, n_params, *spatial)``.

        Returns
        -------
        torch.Tensor
            Complex images ``(batch, n_tau, *spatial)``.
        """

    @abstractmethod
    def jacobian(self, p: torch.Tensor) -> torch.Tensor:
        """Return dq_t/dp_k, complex ``(batch, n_tau, n_params, *spatial)``."""

    @abstractmethod
    def hessian(self, p: torch.Tensor) -> torch.Tensor:
        """Return d^2 q_t / dp_k dp_l, complex ``(batch, n_tau, n_params, n_params, *spatial)``."""

    def residual_curvature(self, p: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Residual-weighted second derivatives Re sum_t conj(r_t) d^2 q_t / dp_k dp_l.

        This is the part of the exact Hessian of ||q(p) - y||^2 / 2 beyond Gauss-Newton.
        Subclasses may override it with a cheaper closed form.

        Parameters
        ----------
        p
            Real parameters ``(batch, n_params, *spatial)``.
        residual
            Complex residual q(p) - y, ``(batch, n_tau, *spatial)``.

        Returns
        -------
        torch.Tensor
            Real ``(batch, n_params, n_params, *spatial)``.
        """
        second = self.hessian(p)
        r = residual.reshape(*residual.shape[:2], 1, 1, *residual.shape[2:])
        return (second.real * r.real + second.imag * r.imag).sum(1)

    def check_parameters(self, name: str, p: object) -> torch.Tensor:
        """Validate a parameter tensor ``(batch, n_params, *spatial)``; return it."""
        p = check_tensor(name, p)
        layout = f"(batch, {self.n_params}, H, W) holding {list(self.parameter_names)}"
        if p.is_complex() or not p.is_floating_point():
            raise ValueError(f"{name} must be real with shape {layout}, got dtype {p.dtype}")
        if p.ndim < 2 or p.shape[1] != self.n_params:
            raise ValueError(f"{name} must have shape {layout}, got shape {tuple(p.shape)}")
        check_finite(name, p)
        return p


def _check_delays(name: str, tau: object) -> torch.Tensor:
    """Validate a delay vector: real, finite, non-negative, shape (n_tau,) or (batch, n_tau)."""
    if not isinstance(tau, torch.Tensor):
        tau = torch.as_tensor(tau, dtype=torch.float64)
    tau = check_tensor(name, tau)
    if tau.is_complex():
        raise ValueError(f"{name} must be real (delays in s), got dtype {tau.dtype}")
    if tau.ndim not in (1, 2) or tau.shape[-1] == 0:
        raise ValueError(
            f"{name} must have shape (n_tau,) or (batch, n_tau) in s, got shape {tuple(tau.shape)}"
        )
    tau = tau.to(torch.get_default_dtype() if not tau.is_floating_point() else tau.dtype)
    check_finite(name, tau)
    if bool((tau < 0).any()):
        raise ValueError(f"{name} must be non-negative (delays in s), got {tau.tolist()}")
    return tau


class _ComplexM0Recovery(SignalModel):
    """Models of the form q_t(p) = M0 * f(tau_t R1) with complex M0 = Re M0 + i Im M0.

    Subclasses give the real recovery curve ``f(x)`` with ``x = tau R1`` through
    :meth:`_curve`, which returns ``f``, ``df/dR1`` and ``d^2f/dR1^2``.
    """

    parameter_names = ("Re M0", "Im M0", "R1")
    bounds = RELAXATION_BOUNDS

    def __init__(
        self, tau: torch.Tensor | list[float] | tuple[float, ...], name: str = "tau"
    ) -> None:
        super().__init__()
        self.register_buffer("tau", _check_delays(name, tau))

    @property
    def n_tau(self) -> int:
        """Number of delays."""
        return self.tau.shape[-1]

    def _tau_like(self, p: torch.Tensor) -> torch.Tensor:
        """Delays shaped ``(batch or 1, n_tau, 1, ...)`` to broadcast against ``p[:, :1]``."""
        tau = self.tau.to(device=p.device, dtype=p.dtype)
        if tau.ndim == 2 and tau.shape[0] not in (1, p.shape[0]):
            raise ValueError(
                f"tau has shape {tuple(tau.shape)} (batch, n_tau) but p has batch {p.shape[0]}"
            )
        tau = tau.reshape(-1, self.n_tau)
        return tau.reshape(*tau.shape, *(1,) * (p.ndim - 2))

    def _split(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return complex M0 ``(batch, 1, *spatial)``, R1 ``(batch, 1, *spatial)`` and tau."""
        m0 = torch.complex(p[:, 0:1], p[:, 1:2])
        return m0, p[:, 2:3], self._tau_like(p)

    @abstractmethod
    def _curve(
        self, tau: torch.Tensor, r1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return f, df/dR1 and d^2f/dR1^2, each broadcast to ``(batch, n_tau, *spatial)``."""

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        """Evaluate q(p); see :class:`SignalModel`."""
        m0, r1, tau = self._split(p)
        f, _, _ = self._curve(tau, r1)
        return m0 * f

    def jacobian(self, p: torch.Tensor) -> torch.Tensor:
        """Analytic dq/dp, complex ``(batch, n_tau, 3, *spatial)``."""
        m0, r1, tau = self._split(p)
        f, df, _ = self._curve(tau, r1)
        f = f.to(m0.dtype)
        return torch.stack([f, 1j * f, m0 * df], dim=2)

    def hessian(self, p: torch.Tensor) -> torch.Tensor:
        """Analytic d^2q/dp^2, complex ``(batch, n_tau, 3, 3, *spatial)``.

        Only the derivatives involving R1 are non-zero: d^2q/dReM0 dR1 = f',
        d^2q/dImM0 dR1 = i f' and d^2q/dR1^2 = M0 f''.
        """
        m0, r1, tau = self._split(p)
        _, df, d2f = self._curve(tau, r1)
        df = df.to(m0.dtype)
        zero = torch.zeros_like(df)
        rows = [
            torch.stack([zero, zero, df], dim=2),
            torch.stack([zero, zero, 1j * df], dim=2),
            torch.stack([df, 1j * df, m0 * d2f], dim=2),
        ]
        return torch.stack(rows, dim=2)

    def residual_curvature(self, p: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Closed form of :meth:`SignalModel.residual_curvature` (only R1 entries are non-zero)."""
        _, r1, tau = self._split(p)
        _, df, d2f = self._curve(tau, r1)
        re, im = residual.real, residual.imag
        c02 = (re * df).sum(1)
        c12 = (im * df).sum(1)
        c22 = ((re * p[:, 0:1] + im * p[:, 1:2]) * d2f).sum(1)
        zero = torch.zeros_like(c02)
        rows = [
            torch.stack([zero, zero, c02], dim=1),
            torch.stack([zero, zero, c12], dim=1),
            torch.stack([c02, c12, c22], dim=1),
        ]
        return torch.stack(rows, dim=1)


class SaturationRecovery(_ComplexM0Recovery):
    """Saturation recovery, q_t = M0 (1 - exp(-tau_t R1)) (paper Eq. 19).

    Parameters
    ----------
    tau
        Saturation recovery times in s, ``(n_tau,)`` or per sample ``(batch, n_tau)``.
    """

    def _curve(
        self, tau: torch.Tensor, r1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e = torch.exp(-tau * r1)
        return 1 - e, tau * e, -tau * tau * e


class InversionRecovery(_ComplexM0Recovery):
    """Ideal inversion recovery, q_t = M0 (1 - 2 exp(-TI_t R1)).

    Parameters
    ----------
    ti
        Inversion times in s, ``(n_tau,)`` or per sample ``(batch, n_tau)``.
    """

    def __init__(self, ti: torch.Tensor | list[float] | tuple[float, ...]) -> None:
        super().__init__(ti, name="ti")

    def _curve(
        self, tau: torch.Tensor, r1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e = torch.exp(-tau * r1)
        return 1 - 2 * e, 2 * tau * e, -2 * tau * tau * e

