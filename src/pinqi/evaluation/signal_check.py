"""Does the measured signal look like the chosen signal model? Checked before a fit.

A fit always returns numbers; with the wrong model or delays in the wrong order they are
wrong by a factor, without any error. The checks here look at the typical signal magnitude
per delay over the fitted voxels and name what the series looks like instead.
"""

from __future__ import annotations

import numpy as np
import torch

#: Models whose signal magnitude only grows with the delay (no null).
RECOVERY_MODELS = ("saturation",)
#: Models whose signal passes through a null (inversion recovery).
INVERSION_MODELS = ("inversion", "inversion-ab", "look-locker")
#: A share of voxels with a parameter on a bound of the fit above this is worth a warning.
BOUND_SHARE_LIMIT = 0.03


def signal_model_problems(tau: np.ndarray, voxels: np.ndarray, model_name: str) -> list[str]:
    """What about the series does not fit ``model_name``, one sentence per problem.

    Parameters
    ----------
    tau
        ``(n_tau,)`` delays in s, in the order of the images.
    voxels
        ``(n_tau, n_voxels)`` real or complex signal of the voxels to be fitted.
    model_name
        The chosen signal model.

    Returns
    -------
    list of str
        Empty where the series looks like the model.
    """
    tau = np.asarray(tau, dtype=float)
    delays = ", ".join(f"{t:g}" for t in tau)
    problems = []
    if np.any(np.diff(tau) <= 0):
        problems.append(
            f"the delays are not in ascending order ({delays} s): they must follow the "
            "images' order exactly"
        )
    order = np.argsort(tau, kind="stable")
    typical = np.median(np.abs(voxels), axis=1)[order]
    if len(typical) < 3 or not typical.max() > 0:
        return problems
    typical = typical / typical.max()
    first, last = typical[0], typical[-1]
    interior = typical[1:-1]
    null = int(np.argmin(interior)) + 1
    has_null = first > 0.3 and interior.min() < 0.5 * min(first, last)
    if model_name in RECOVERY_MODELS:
        if has_null:
            problems.append(
                f"the signal dips to a null near {tau[order][null]:g} s and recovers, as an "
                "inversion recovery does, which a saturation-recovery model cannot produce: "
                "use the model inversion or inversion-ab"
            )
        elif first > last + 0.2:
            problems.append(
                "the signal falls as the delay grows, which no recovery does: are the delays "
                f"given in the reversed order ({delays} s)?"
            )
    elif (
        model_name in INVERSION_MODELS
        and not has_null
        and first < 0.5 * last
        and np.all(np.diff(typical) >= -0.02)
    ):
        problems.append(
            f"the signal only grows, from {first:.0%} of its largest value, with no inversion "
            "null: if this is a saturation recovery, use the model saturation"
        )
    return problems


def bound_share_problem(at_bound: np.ndarray) -> str | None:
    """A sentence when more than :data:`BOUND_SHARE_LIMIT` of the voxels sit on a bound."""
    share = float(np.mean(at_bound)) if at_bound.size else 0.0
    if share <= BOUND_SHARE_LIMIT:
        return None
    return (
        f"{100 * share:.0f} % of the voxels have T1 on a bound of the fit (at_bound.nii.gz): "
        "the model or the delays may not match the data"
    )


class SignalModelWarning(UserWarning):
    """The measured signal does not look like the chosen signal model."""


def kspace_signal_problems(
    kspace: torch.Tensor,
    coil_maps: torch.Tensor,
    mask: torch.Tensor,
    tau: torch.Tensor,
    model_name: str,
) -> list[str]:
    """:func:`signal_model_problems` of k-space data, before any reconstruction.

    Looks at the coil-combined zero-filled images A^H k ``(batch, T, H, W)`` (aliased, but
    their typical magnitude per delay follows the signal) over the pixels whose magnitude at
    the longest delay exceeds 5 % of its 99th percentile.

    Parameters
    ----------
    kspace
        Complex ``(batch, T, C, H, W)``.
    coil_maps
        Complex ``(batch, C, H, W)``.
    mask
        0/1 sampling mask broadcastable to ``(batch, T, H, W)``.
    tau
        ``(T,)`` delays in s.
    model_name
        The data's signal model.
    """
    from pinqi.physics import CartesianAcquisition

    acquisition = CartesianAcquisition(coil_maps, mask)
    images = acquisition.adjoint(kspace)
    # zero filling scales each delay by its sampled share: undo it
    sampled = acquisition.mask.to(images.real.dtype).mean(dim=(-2, -1))
    images = images / sampled.clamp(min=1e-6)[..., None, None]
    longest = images[:, int(torch.argmax(tau))].abs()
    level = torch.quantile(longest.flatten(1).float(), 0.99, dim=1)
    signal = longest > 0.05 * level[:, None, None]
    voxels = images.movedim(1, -1)[signal].T  # (T, n_voxels)
    return signal_model_problems(
        tau.detach().cpu().numpy(), voxels.detach().cpu().numpy(), model_name
    )
