"""Input validation shared by the physics operators and the solvers.

Every public function of pinqi checks its inputs with these helpers, so that bad input fails
early with a message that names the argument, what was expected and what was given.

Checks of tensor values (finite, in range) need the value on the host: one read, a host
synchronisation on accelerators, per check. Inside :func:`one_read` the value checks are
collected and read together once at the end of the block, so a network validates its inputs
with a single synchronisation.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence

import torch

#: The value checks collected by the innermost :func:`one_read` block (None outside one).
_PENDING: contextvars.ContextVar[list[tuple[torch.Tensor, Callable[[], str]]] | None] = (
    contextvars.ContextVar("pending_checks", default=None)
)


def require(ok: torch.Tensor, message: str | Callable[[], str]) -> None:
    """Raise ``ValueError(message)`` unless the 0-dim bool tensor ``ok`` is True.

    Inside :func:`one_read` the check is deferred to the end of the block. ``message`` may be
    a function, called only on failure (for messages that read values themselves).
    """
    explain = message if callable(message) else lambda: message
    pending = _PENDING.get()
    if pending is None:
        if not bool(ok):
            raise ValueError(explain())
    else:
        pending.append((ok, explain))


@contextlib.contextmanager
def one_read() -> Iterator[None]:
    """Collect the value checks of the block (:func:`require`) and read them once at its end.

    Raises the first failed check's ``ValueError`` when the block ends; code inside the block
    must therefore not depend on a value check having passed (shapes and dtypes are still
    checked at once).
    """
    token = _PENDING.set([])
    try:
        yield
        pending = _PENDING.get()
    finally:
        _PENDING.reset(token)
    if pending and not bool(torch.stack([ok.reshape(()) for ok, _ in pending]).all()):
        for ok, explain in pending:
            if not bool(ok):
                raise ValueError(explain())


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
    require(torch.isfinite(x).all(), f"{name} contains NaN or Inf values")


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
    require(
        (lam >= 0).all(), lambda: f"{name} must be non-negative, got min {float(lam.min()):.3g}"
    )
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
