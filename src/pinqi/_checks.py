"""Input validation shared by the physics operators and the solvers.

Every public function of pinqi checks its inputs with these helpers, so that bad input fails
early with a message that names the argument, what was expected and what was given.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_tensor(name: str, x: object) -> torch.Tensor:
    """Raise unless ``x`` is a tensor; return it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_complex(name: str, x: object, ndim: int, layout: str) -> torch.Tensor:
    """Check a complex tensor of ``ndim`` dimensions with finite values.

    Parameters
    ----------
    name
        Argument name used in the error message.
    x
        The tensor to check.
    ndim
        Required number of dimensions.
    layout
        Human readable expected shape, e.g. ``"(batch, n_tau, H, W)"``.
    """
    x = check_tensor(name, x)
    if not x.is_complex():
        raise ValueError(f"{name} must be complex with shape {layout}, got dtype {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(x.shape)}")
    check_finite(name, x)
    return x


def check_real(name: str, x: object, ndim: int | None, layout: str) -> torch.Tensor:
    """Check a real floating point tensor (``ndim`` dimensions unless None) with finite values."""
    x = check_tensor(name, x)
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a real floating point tensor {layout}, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(x.shape)}")
    check_finite(name, x)
    return x


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise if ``x`` holds NaN or Inf."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf values")


def check_shape(name: str, x: torch.Tensor, expected: Sequence[int | None], layout: str) -> None:
    """Check ``x.shape`` against ``expected``, where ``None`` accepts any size."""
    ok = x.ndim == len(expected) and all(
        e is None or e == s for e, s in zip(expected, x.shape, strict=True)
    )
    if not ok:
        want = tuple("*" if e is None else e for e in expected)
        raise ValueError(f"{name} must have shape {layout} = {want}, got shape {tuple(x.shape)}")


def check_broadcastable(name: str, x: torch.Tensor, target: Sequence[int], layout: str) -> None:
    """Check that ``x`` broadcasts to ``target`` without changing ``target``."""
    ok = x.ndim == len(target) and all(s in (1, t) for s, t in zip(x.shape, target, strict=True))
    if not ok:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)} but must be broadcastable to {layout} = "
            f"{tuple(target)}"
        )


def check_regularization(
    name: str, lam: object, batch: int, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """Check a regularization strength: a real scalar or ``(batch,)`` tensor, finite, >= 0.

    Returns
    -------
    torch.Tensor
        The strength as a ``(batch,)`` view (broadcast from a scalar if needed) of ``dtype``
        on ``device`` (the device of the data it regularizes).
    """
    if isinstance(lam, (int, float)):
        lam = torch.tensor(float(lam), dtype=dtype, device=device)
    lam = check_tensor(name, lam)
    if lam.is_complex() or not lam.is_floating_point():
        raise ValueError(f"{name} must be a real floating point tensor, got {lam.dtype}")
    if lam.ndim > 1 or (lam.ndim == 1 and lam.shape[0] not in (1, batch)):
        raise ValueError(
            f"{name} must be a scalar or have shape (batch,) = ({batch},), got {tuple(lam.shape)}"
        )
    check_finite(name, lam)
    if bool((lam < 0).any()):
        raise ValueError(f"{name} must be non-negative, got min {float(lam.min()):.3g}")
    return lam.to(device=device, dtype=dtype).reshape(-1).expand(batch)


def check_parameter_regularization(
    name: str,
    lam: object,
    batch: int,
    n_params: int,
    dtype: torch.dtype,
    device: torch.device | str,
) -> torch.Tensor:
    """Check a per-parameter strength: a scalar, ``(batch,)`` or ``(batch, P)``; finite, >= 0.

    Returns
    -------
    torch.Tensor
        The strength as a ``(batch, P)`` view of ``dtype`` on ``device``.
    """
    if isinstance(lam, torch.Tensor) and lam.ndim == 2:
        if tuple(lam.shape) not in ((batch, n_params), (1, n_params)):
            raise ValueError(
                f"{name} must be a scalar, (batch,) = ({batch},) or (batch, P) = "
                f"({batch}, {n_params}), got {tuple(lam.shape)}"
            )
        check_regularization(name, lam.reshape(-1), lam.numel(), dtype, device)
        return lam.to(device=device, dtype=dtype).expand(batch, n_params)
    return check_regularization(name, lam, batch, dtype, device)[:, None].expand(batch, n_params)


_REAL_OF_COMPLEX = {
    torch.complex32: torch.float16,
    torch.complex64: torch.float32,
    torch.complex128: torch.float64,
}


def real_dtype_of(dtype: torch.dtype) -> torch.dtype:
    """Return the real dtype matching a (complex or real) floating point ``dtype``."""
    return _REAL_OF_COMPLEX.get(dtype, dtype)


def complex_dtype_of(dtype: torch.dtype) -> torch.dtype:
    """Return the complex dtype matching a real floating point ``dtype``."""
    return {torch.float32: torch.complex64, torch.float64: torch.complex128}.get(
        dtype, torch.complex64
    )
