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


def stack_complex(x: torch.Tensor) -> torch.Tensor:
    """Real parts, then imaginary parts of ``x`` ``(batch, T, ...)`` along axis 1."""
    return torch.view_as_real(x).movedim(-1, 1).reshape(x.shape[0], -1, *x.shape[2:])


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
    typical
        ``(value, spread)`` per parameter: the scale of a learned prediction.
    """

    parameter_names: tuple[str, ...]
    bounds: tuple[tuple[float, float], ...]
    typical: tuple[tuple[float, float], ...]

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

    def _tau_like(self, p: torch.Tensor) -> torch.Tensor:
        """The delays (buffer ``tau``) shaped ``(batch or 1, n_tau, 1, ...)`` like ``p[:, :1]``."""
        tau = self.tau.to(device=p.device, dtype=p.dtype)
        if tau.ndim == 2 and tau.shape[0] not in (1, p.shape[0]):
            raise ValueError(
                f"tau has shape {tuple(tau.shape)} (batch, n_tau) but p has batch {p.shape[0]}"
            )
        tau = tau.reshape(-1, self.n_tau)
        return tau.reshape(*tau.shape, *(1,) * (p.ndim - 2))

    def jacobian_vector_product(self, p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """J v = sum_k dq/dp_k v_k for real ``v`` ``(batch, n_params, *spatial)``; complex."""
        return (self.jacobian(p) * v.unsqueeze(1)).sum(2)

    def data_curvature(self, p: torch.Tensor) -> torch.Tensor:
        """Mean over pixels of the data term's curvature per parameter, real ``(batch, P)``.

        The diagonal of J^H J, sum_t |dq_t/dp_k|^2, averaged over the spatial axes: the
        scale on which a penalty on p_k competes with ||q(p) - y||^2 (for the relaxation
        models it grows with |M0|^2 for R1, so it follows the intensity of the data).
        """
        return self.jacobian(p).abs().square().sum(1).flatten(2).mean(2)

    def initial_parameters(self, images: torch.Tensor) -> torch.Tensor:
        """A start for fitting ``images`` ``(batch, n_tau, *spatial)``: ``(batch, P, *spatial)``.

        Subclasses give a cheap closed-form guess (e.g. M0 from the longest delay, R1 = 1 1/s).
        """
        raise NotImplementedError(f"{type(self).__name__} has no initial_parameters")

    # The solvers treat the complex frames as real vectors of length 2 n_tau (all real parts,
    # then all imaginary parts). Subclasses may override these with cheaper real forms.

    def stacked_forward(self, p: torch.Tensor) -> torch.Tensor:
        """q(p) as real ``(batch, 2 n_tau, *spatial)``: real parts, then imaginary parts."""
        return stack_complex(self.forward(p))

    def normal_terms(
        self, p: torch.Tensor, residual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The terms of the gradient and Hessian of ||q(p) - y||^2 / 2 at ``p``.

        Parameters
        ----------
        p
            Real parameters ``(batch, n_params, *spatial)``.
        residual
            Stacked real residual q(p) - y, ``(batch, 2 n_tau, *spatial)``.

        Returns
        -------
        jtr
            Re(J^H r), ``(batch, n_params, *spatial)``.
        jtj
            Re(J^H J), ``(batch, n_params, n_params, *spatial)``.
        curvature
            Re sum_t conj(r_t) d^2 q_t / dp_k dp_l, ``(batch, n_params, n_params, *spatial)``:
            the exact Hessian is jtj + curvature.
        """
        jac = stack_complex(self.jacobian(p))
        jtr = (jac * residual.unsqueeze(2)).sum(1)
        n_params = jac.shape[2]
        entries: dict[tuple[int, int], torch.Tensor] = {}
        for k in range(n_params):
            for m in range(k + 1):
                entries[k, m] = (jac[:, :, k] * jac[:, :, m]).sum(1)
        jtj = torch.stack(
            [
                torch.stack([entries[max(k, m), min(k, m)] for m in range(n_params)], dim=1)
                for k in range(n_params)
            ],
            dim=1,
        )
        second = stack_complex(self.hessian(p))
        r = residual.reshape(*residual.shape[:2], 1, 1, *residual.shape[2:])
        return jtr, jtj, (second * r).sum(1)

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
    #: Typical value and spread of each parameter (the scale of a network's prediction).
    typical = ((0.9, 0.2), (0.0, 0.1), (0.8, 0.6))

    def __init__(
        self, tau: torch.Tensor | list[float] | tuple[float, ...], name: str = "tau"
    ) -> None:
        super().__init__()
        self.register_buffer("tau", _check_delays(name, tau))

    @property
    def n_tau(self) -> int:
        """Number of delays."""
        return self.tau.shape[-1]

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

    def jacobian_vector_product(self, p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Closed form of :meth:`SignalModel.jacobian_vector_product`: (v0 + i v1) f + M0 f' v2."""
        m0, r1, tau = self._split(p)
        f, df, _ = self._curve(tau, r1)
        return torch.complex(v[:, 0:1], v[:, 1:2]) * f + m0 * (df * v[:, 2:3])

    def initial_parameters(self, images: torch.Tensor) -> torch.Tensor:
        """M0 from the frame with the longest delay, R1 = 1 1/s."""
        longest = images[:, int(self.tau.reshape(-1, self.n_tau)[0].argmax())]
        return torch.stack([longest.real, longest.imag, torch.ones_like(longest.real)], dim=1)

    def stacked_forward(self, p: torch.Tensor) -> torch.Tensor:
        """Real form of :meth:`forward`; see :meth:`SignalModel.stacked_forward`."""
        f, _, _ = self._curve(self._tau_like(p), p[:, 2:3])
        return torch.cat([p[:, 0:1] * f, p[:, 1:2] * f], dim=1)

    def normal_terms(
        self, p: torch.Tensor, residual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Closed form of :meth:`SignalModel.normal_terms` from sums over the delays.

        With J = [f, i f, M0 f'] and d^2q only in the R1 entries, every term is a product of
        M0 with one of the sums of f^2, f f', f'^2, f r, f' r and f'' r over the delays.
        """
        f, df, d2f = self._curve(self._tau_like(p), p[:, 2:3])
        re, im = torch.chunk(residual, 2, dim=1)
        a, b = p[:, 0], p[:, 1]
        ff, fdf, dfdf = (f * f).sum(1), (f * df).sum(1), (df * df).sum(1)
        dre, dim_ = (df * re).sum(1), (df * im).sum(1)
        jtr = torch.stack([(f * re).sum(1), (f * im).sum(1), a * dre + b * dim_], dim=1)
        zero = torch.zeros_like(ff)
        jtj = _symmetric3(ff, zero, a * fdf, ff, b * fdf, (a * a + b * b) * dfdf)
        c22 = a * (d2f * re).sum(1) + b * (d2f * im).sum(1)
        curvature = _symmetric3(zero, zero, dre, zero, dim_, c22)
        return jtr, jtj, curvature


def _symmetric3(
    c00: torch.Tensor,
    c01: torch.Tensor,
    c02: torch.Tensor,
    c11: torch.Tensor,
    c12: torch.Tensor,
    c22: torch.Tensor,
) -> torch.Tensor:
    """Symmetric 3x3 matrices from their upper triangle, each ``(batch, *spatial)``."""
    rows = [
        torch.stack([c00, c01, c02], dim=1),
        torch.stack([c01, c11, c12], dim=1),
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


class InversionRecoveryAB(SignalModel):
    """Inversion recovery with incomplete recovery, q_t = a + b exp(-TI_t R1), complex a, b.

    The usual "three-parameter" inversion-recovery model of real protocols (imperfect
    inversion, incomplete recovery between repetitions), with complex a and b: five real
    parameters per pixel, ``[Re a, Im a, Re b, Im b, R1]``. An ideal inversion has b = -2 a.

    Parameters
    ----------
    ti
        Inversion times in s, ``(n_tau,)`` or per sample ``(batch, n_tau)``.
    """

    parameter_names = ("Re a", "Im a", "Re b", "Im b", "R1")
    bounds = ((-2.0, 2.0), (-2.0, 2.0), (-4.0, 4.0), (-4.0, 4.0), (-1.0, 20.0))
    typical = ((0.9, 0.2), (0.0, 0.1), (-1.7, 0.4), (0.0, 0.2), (0.8, 0.6))

    def __init__(self, ti: torch.Tensor | list[float] | tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("tau", _check_delays("ti", ti))

    @property
    def n_tau(self) -> int:
        """Number of inversion times."""
        return self.tau.shape[-1]

    def _terms(
        self, p: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """a, b (complex, ``(batch, 1, ...)``), TI and exp(-TI R1) broadcast to the frames."""
        tau = self._tau_like(p)
        a = torch.complex(p[:, 0:1], p[:, 1:2])
        b = torch.complex(p[:, 2:3], p[:, 3:4])
        return a, b, tau, torch.exp(-tau * p[:, 4:5])

    def initial_parameters(self, images: torch.Tensor) -> torch.Tensor:
        """Start: a from the longest inversion time, b = -2 a (ideal inversion), R1 = 1 1/s."""
        a = images[:, int(self.tau.reshape(-1, self.n_tau)[0].argmax())]
        return torch.stack([a.real, a.imag, -2 * a.real, -2 * a.imag, torch.ones_like(a.real)], 1)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        """Evaluate q(p); see :class:`SignalModel`."""
        a, b, _, e = self._terms(p)
        return a + b * e

    def jacobian(self, p: torch.Tensor) -> torch.Tensor:
        """Analytic dq/dp: [1, i, e, i e, -TI b e], complex ``(batch, n_tau, 5, *spatial)``."""
        a, b, tau, e = self._terms(p)
        one = torch.ones_like(e).to(a.dtype)
        e = e.to(a.dtype)
        return torch.stack([one, 1j * one, e, 1j * e, -tau * b * e], dim=2)

    def hessian(self, p: torch.Tensor) -> torch.Tensor:
        """Analytic d^2q/dp^2: only (Re b, R1), (Im b, R1) and (R1, R1) are non-zero."""
        a, b, tau, e = self._terms(p)
        e_c = e.to(a.dtype)
        zero = torch.zeros_like(e_c)
        d_b_r1 = -tau * e_c
        entries = [[zero] * 5 for _ in range(5)]
        entries[2][4] = entries[4][2] = d_b_r1
        entries[3][4] = entries[4][3] = 1j * d_b_r1
        entries[4][4] = tau * tau * b * e_c
        return torch.stack([torch.stack(row, dim=2) for row in entries], dim=2)


#: Signal models selectable by name (presets, ``pinqi fit --model``).
SIGNAL_MODELS: dict[str, type[SignalModel]] = {
    "saturation": SaturationRecovery,
    "inversion": InversionRecovery,
    "inversion-ab": InversionRecoveryAB,
}


def signal_model(name: str, tau: torch.Tensor | list[float] | tuple[float, ...]) -> SignalModel:
    """The signal model called ``name`` (see :data:`SIGNAL_MODELS`) at delays ``tau`` in s."""
    if name not in SIGNAL_MODELS:
        raise ValueError(f"unknown signal model {name!r}; choose one of {sorted(SIGNAL_MODELS)}")
    return SIGNAL_MODELS[name](tau)
