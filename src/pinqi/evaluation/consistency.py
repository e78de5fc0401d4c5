"""Never silently wrong: how well PINQI's maps explain the measured data, against a plain fit.

A learned prior can pull the maps away from what the data say, most of all on data unlike the
training data (another T1 range, phase, anatomy). The data tell: the signal model of the maps,
encoded by the acquisition, must reproduce the measured k-space. This module measures that
data residual for PINQI's maps and for the non-learned CG-SENSE + pixel-wise fit of the same
k-space, per slice and per pixel, and warns where PINQI explains the data much worse.

The per-slice statistic is the residual ratio ||A q(p_PINQI) - k|| / ||A q(p_fit) - k||: the
plain fit's residual is the noise where the fit explains the data, so the ratio measures
PINQI's excess residual in units of the noise level the data show. How far it spreads on data
like the training data depends on the model and on the noise (a learned prior's bias weighs
more against little noise), so its limit is calibrated per model and per noise level
(:mod:`pinqi.evaluation.calibration`; the noise level estimated from the k-space corners by
:func:`estimate_noise_sigma`) for a chosen false-alarm rate, and stored in the model card
(:class:`ResidualCheck`).

A second statistic catches what the residual misses where k-space constrains T1 only weakly
(a prior that pulls T1 toward its training range while the maps still explain the data): the
T1 disagreement between PINQI and the plain fit, both averaged over small windows so that the
fit's noise averages out and a bias remains (:func:`t1_disagreement`). The check flags a slice
where either statistic exceeds its limit; both limits come from one calibration, so the
false-alarm rate holds for the pair.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pinqi.evaluation.baseline import BaselineConfig, cg_sense_images, fit_flat_prior
from pinqi.physics import CartesianAcquisition, SignalModel

#: Default of :func:`warn_if_inconsistent` and the limit of models without a calibration: warn
#: when PINQI's relative k-space residual exceeds the plain fit's by this factor.
RESIDUAL_RATIO_LIMIT = 1.5

#: Share of the k-space (per axis, from each edge) whose sampled corners estimate the noise.
NOISE_CORNER = 0.25

#: Box window (pixels) over which the T1 maps are averaged before :func:`t1_disagreement`.
DISAGREEMENT_WINDOW = 5

#: Pixels with signal: PINQI's modelled |signal| at the longest delay above this share of its
#: 99th percentile in the slice.
SIGNAL_FRACTION = 0.1

#: R1 range (1/s) of the T1 comparison: T1 from 0.05 to 10 s.
DISAGREEMENT_R1_RANGE = (0.1, 20.0)


class OutOfDistributionWarning(UserWarning):
    """PINQI's maps explain the measured data much worse than a non-learned fit."""


@dataclass(frozen=True)
class Consistency:
    """Data residuals of PINQI and of the CG-SENSE + fit baseline.

    Attributes
    ----------
    baseline
        The baseline's parameter maps ``(n, P, H, W)``.
    kspace_residual
        Method (``"PINQI"``, ``"CG-SENSE + fit"``) -> ||A q(p) - k|| / ||k|| per slice ``(n,)``.
    residual_maps
        Method -> :func:`residual_map` ``(n, H, W)`` in the data's intensity units.
    t1_disagreement
        :func:`t1_disagreement` of PINQI's maps and the baseline's per slice ``(n,)``.
    """

    baseline: torch.Tensor
    kspace_residual: dict[str, torch.Tensor]
    residual_maps: dict[str, torch.Tensor]
    t1_disagreement: torch.Tensor


def residual_ratio(kspace_residual: dict[str, torch.Tensor]) -> torch.Tensor:
    """PINQI's k-space residual over the baseline's per slice ``(batch,)``.

    ``kspace_residual`` maps ``"PINQI"`` and ``"CG-SENSE + fit"`` to :func:`kspace_residual`.
    """
    fit = kspace_residual["CG-SENSE + fit"]
    return kspace_residual["PINQI"] / fit.clamp(min=torch.finfo(fit.dtype).tiny)


def kspace_residual(
    model: SignalModel,
    params: torch.Tensor,
    acquisition: CartesianAcquisition,
    kspace: torch.Tensor,
) -> torch.Tensor:
    """||A q(p) - k|| / ||k|| over the sampled k-space, per slice ``(batch,)``."""
    residual = acquisition.forward(model(params)) - acquisition.mask.unsqueeze(2) * kspace
    return residual.flatten(1).norm(dim=1) / kspace.flatten(1).norm(dim=1)


def residual_map(
    model: SignalModel,
    params: torch.Tensor,
    acquisition: CartesianAcquisition,
    kspace: torch.Tensor,
) -> torch.Tensor:
    """Where the maps miss the data: RMS over the delays of |A^H (A q(p) - k)|, ``(batch, H, W)``.

    The k-space residual brought back to the image (coil-combined); for maps that explain the
    data it is noise, elsewhere it shows where they do not (spread by the undersampling).
    """
    return (
        acquisition.adjoint(acquisition.forward(model(params)) - kspace)
        .abs()
        .square()
        .mean(1)
        .sqrt()
    )


def t1_disagreement(
    model: SignalModel,
    params: torch.Tensor,
    baseline: torch.Tensor,
    window: int = DISAGREEMENT_WINDOW,
) -> torch.Tensor:
    """How far PINQI's T1 lies from the plain fit's beyond noise, per slice ``(batch,)``.

    The mean over the pixels with signal (:data:`SIGNAL_FRACTION`) of
    ``|box(ln T1_PINQI) - box(ln T1_fit)|``, with ``box`` the mean over the pixels with signal
    in a ``window`` x ``window`` neighbourhood: the fit's noise averages out, a systematic
    difference (a learned prior pulling T1 away from what the data say) does not. 0.1 means T1
    about 10 % apart on average. T1 is compared within :data:`DISAGREEMENT_R1_RANGE`.

    Parameters
    ----------
    model
        The signal model; its parameters include ``"R1"`` (1/s).
    params, baseline
        PINQI's and the plain fit's maps ``(batch, P, H, W)``.
    window
        Odd box width in pixels.
    """
    r1 = model.parameter_names.index("R1")
    longest = model(params)[:, int(torch.argmax(model.tau))].abs()
    level = torch.quantile(longest.flatten(1).float(), 0.99, dim=1).to(longest.dtype)
    signal = (longest > SIGNAL_FRACTION * level[:, None, None]).to(params.dtype)[:, None]

    def box(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, window, 1, window // 2, count_include_pad=False)

    weight = box(signal).clamp(min=torch.finfo(params.dtype).tiny)

    def smoothed_log_t1(p: torch.Tensor) -> torch.Tensor:
        log_t1 = -torch.log(p[:, r1 : r1 + 1].clamp(*DISAGREEMENT_R1_RANGE))
        return box(log_t1 * signal) / weight

    difference = (smoothed_log_t1(params) - smoothed_log_t1(baseline)).abs() * signal
    return difference.flatten(1).sum(1) / signal.flatten(1).sum(1).clamp(min=1)


def check_consistency(
    model: SignalModel,
    params: torch.Tensor,
    kspace: torch.Tensor,
    coil_maps: torch.Tensor,
    mask: torch.Tensor,
    config: BaselineConfig | None = None,
) -> Consistency:
    """Data residuals of PINQI's ``params`` ``(batch, P, H, W)`` and of the baseline.

    Runs the baseline (:func:`~pinqi.evaluation.baseline.cg_sense_fit`) on the same k-space
    ``(batch, T, C, H, W)`` (settings ``config``, default
    :class:`~pinqi.evaluation.baseline.BaselineConfig`); its maps come back in the result, so
    a caller that needs both pays for the baseline once.
    """
    acquisition = CartesianAcquisition(coil_maps, mask)
    images, _ = cg_sense_images(kspace, coil_maps, mask, config or BaselineConfig())
    baseline, _ = fit_flat_prior(model, images, (config or BaselineConfig()).lambda_fit)
    maps = {"PINQI": params, "CG-SENSE + fit": baseline}
    return Consistency(
        baseline=baseline,
        kspace_residual={
            m: kspace_residual(model, p, acquisition, kspace) for m, p in maps.items()
        },
        residual_maps={m: residual_map(model, p, acquisition, kspace) for m, p in maps.items()},
        t1_disagreement=t1_disagreement(model, params, baseline),
    )


def estimate_noise_sigma(
    kspace: torch.Tensor, mask: torch.Tensor, corner: float = NOISE_CORNER
) -> torch.Tensor:
    """The noise level of each slice from its sampled k-space corners ``(batch,)``.

    The standard deviation of the real (and of the imaginary) part of the noise per k-space
    sample, in the data's intensity units (the ``noise_sigma`` of
    :mod:`pinqi.data.simulation`): the median magnitude of the sampled samples whose two
    k-space coordinates both lie in the outer ``corner`` of their axis, over sqrt(2 ln 2)
    (the median of a Rayleigh distribution). The corners hold little signal, so the estimate
    is close for noisy data and an upper bound where the signal dominates even there (for
    BrainWeb slices at 96 x 96 it levels off near 0.013 for sigma below 0.01).

    Parameters
    ----------
    kspace
        Complex ``(batch, T, C, H, W)``.
    mask
        0/1 sampling mask broadcastable to ``(batch, T, H, W)``.
    corner
        Share of each axis, from each edge, that counts as its outer part (0 < corner <= 0.5).
    """
    height, width = kspace.shape[-2:]
    rows = (torch.arange(height, device=kspace.device) - height // 2).abs() >= (
        0.5 - corner
    ) * height
    columns = (torch.arange(width, device=kspace.device) - width // 2).abs() >= (
        0.5 - corner
    ) * width
    sampled = mask.to(torch.bool).expand(kspace.shape[:2] + kspace.shape[-2:]).unsqueeze(2)
    where = (sampled & rows[:, None] & columns).expand(kspace.shape).flatten(1)
    magnitude = kspace.abs().flatten(1)
    rayleigh_median = math.sqrt(2 * math.log(2))
    return (
        torch.stack(
            [
                m[w].median() if bool(w.any()) else m.new_tensor(math.nan)
                for m, w in zip(magnitude, where, strict=True)
            ]
        )
        / rayleigh_median
    )


@dataclass(frozen=True)
class ResidualCheck:
    """A model's limits of the data check, per band of the estimated noise level.

    Attributes
    ----------
    limits
        Residual-ratio limit of each noise band, from the lowest noise to the highest.
    noise_edges
        The ``len(limits) - 1`` ascending band edges of :func:`estimate_noise_sigma`.
    false_alarm
        Share of in-distribution slices the limits were calibrated to flag at most (None:
        not calibrated).
    disagreement_limits
        :func:`t1_disagreement` limit of each noise band; empty for checks of the residual
        ratio alone (older cards).
    disagreement_median
        The median :func:`t1_disagreement` of the calibration slices: how far PINQI's T1
        lies from the plain fit's on a typical slice of the model's own data (the target of
        scan-specific adaptation); None without a calibration of it.
    """

    limits: tuple[float, ...] = (RESIDUAL_RATIO_LIMIT,)
    noise_edges: tuple[float, ...] = ()
    false_alarm: float | None = None
    disagreement_limits: tuple[float, ...] = ()
    disagreement_median: float | None = None

    def __post_init__(self) -> None:
        if len(self.limits) != len(self.noise_edges) + 1:
            raise ValueError(
                f"a residual check needs one limit more than noise edges, got {self.limits} "
                f"and {self.noise_edges}"
            )
        if self.disagreement_limits and len(self.disagreement_limits) != len(self.limits):
            raise ValueError(
                f"a residual check needs one T1 disagreement limit per noise band, got "
                f"{self.disagreement_limits} for {len(self.limits)} bands"
            )

    @classmethod
    def from_card(cls, check: dict) -> ResidualCheck:
        """The check stored in a model card's ``residual_check`` (older cards: one limit)."""
        if "limits" in check:
            return cls(
                tuple(float(v) for v in check["limits"]),
                tuple(float(v) for v in check.get("noise_edges", ())),
                check.get("false_alarm"),
                tuple(float(v) for v in check.get("t1_disagreement_limits", ())),
                check.get("t1_disagreement_median"),
            )
        return cls((float(check.get("limit", RESIDUAL_RATIO_LIMIT)),))

    def _band(self, noise_sigma: torch.Tensor) -> torch.Tensor:
        edges = torch.tensor(self.noise_edges, dtype=torch.float64)
        return torch.bucketize(noise_sigma.detach().cpu().double(), edges)

    def limit(self, noise_sigma: torch.Tensor) -> torch.Tensor:
        """The residual-ratio limit of each slice ``(batch,)`` for its noise ``(batch,)``."""
        return torch.tensor(self.limits, dtype=torch.float64)[self._band(noise_sigma)]

    def disagreement_limit(self, noise_sigma: torch.Tensor) -> torch.Tensor:
        """The T1 disagreement limit of each slice ``(batch,)`` (inf without one)."""
        if not self.disagreement_limits:
            return torch.full(noise_sigma.shape, math.inf, dtype=torch.float64)
        limits = torch.tensor(self.disagreement_limits, dtype=torch.float64)
        return limits[self._band(noise_sigma)]

    def flags(
        self, ratio: torch.Tensor, disagreement: torch.Tensor, noise_sigma: torch.Tensor
    ) -> torch.Tensor:
        """Which slices the check flags ``(batch,)`` bool: either statistic above its limit.

        A NaN statistic counts as above.
        """
        above_ratio = _above(ratio, self.limit(noise_sigma))
        return above_ratio | _above(disagreement, self.disagreement_limit(noise_sigma))

    def warn(
        self,
        ratio: torch.Tensor,
        disagreement: torch.Tensor,
        noise_sigma: torch.Tensor,
        what: str = "slice",
    ) -> list[int]:
        """:func:`warn_if_inconsistent` with this check's limits; the flagged indices."""
        return warn_if_inconsistent(
            ratio,
            self.limit(noise_sigma),
            what,
            disagreement,
            self.disagreement_limit(noise_sigma),
            stacklevel=3,
        )


def _above(statistic: torch.Tensor, limit: float | torch.Tensor) -> torch.Tensor:
    """The data check's rule: ``statistic`` above ``limit`` ``(batch,)`` bool; NaN is above."""
    statistic = statistic.detach().cpu().double()
    return ~(statistic <= torch.as_tensor(limit, dtype=torch.float64).expand(statistic.shape))


def excess_residual_map(
    residual_pinqi: torch.Tensor, residual_fit: torch.Tensor, window: int = 5
) -> torch.Tensor:
    """Where PINQI misses the data: its local excess residual power over the plain fit's.

    ``(box(r_PINQI^2) - box(r_fit^2)) / box(r_fit^2)`` with a ``window`` x ``window`` box mean,
    for :func:`residual_map` ``(batch, H, W)`` of PINQI and of the fit: about 0 where PINQI
    explains the data as well as the fit, 1 where its residual power is twice the fit's.
    """

    def box(x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(
            x.square().unsqueeze(1), window, 1, window // 2, count_include_pad=False
        )
        return pooled.squeeze(1)

    fit = box(residual_fit)
    return (box(residual_pinqi) - fit) / fit.clamp(min=torch.finfo(fit.dtype).tiny)


def warn_if_inconsistent(
    ratio: torch.Tensor,
    limit: float | torch.Tensor = RESIDUAL_RATIO_LIMIT,
    what: str = "slice",
    disagreement: torch.Tensor | None = None,
    disagreement_limit: torch.Tensor | None = None,
    stacklevel: int = 2,
) -> list[int]:
    """Warn about the slices that fail the data check; return their indices.

    A slice fails where its residual ratio exceeds ``limit`` (one number or one per slice,
    :meth:`ResidualCheck.limit`) or, when given, its :func:`t1_disagreement` exceeds
    ``disagreement_limit`` (per slice, :meth:`ResidualCheck.disagreement_limit`). The warning
    is one line with rounded numbers and says what to do; ``stacklevel`` as in
    :func:`warnings.warn` (2: the caller of this function).
    """
    limits = torch.as_tensor(limit, dtype=torch.float64).expand(ratio.shape)
    ratio_bad = _above(ratio, limits).tolist()
    t1_bad = [False] * len(ratio_bad)
    if disagreement is not None and disagreement_limit is not None:
        t1_limits = torch.as_tensor(disagreement_limit, dtype=torch.float64).expand(ratio.shape)
        t1_bad = _above(disagreement, t1_limits).tolist()
    bad = [i for i in range(len(ratio_bad)) if ratio_bad[i] or t1_bad[i]]
    if bad:
        listed = ", ".join(str(i) for i in bad[:10]) + (", ..." if len(bad) > 10 else "")
        found = []
        if any(ratio_bad):
            worst = max((i for i in bad if ratio_bad[i]), key=lambda i: float(ratio[i] / limits[i]))
            found.append(
                f"residual ratio up to {float(ratio[worst]):.2f} where the model's limit is "
                f"{float(limits[worst]):.2f}"
            )
        if any(t1_bad):
            worst = max(
                (i for i in bad if t1_bad[i]),
                key=lambda i: float(disagreement[i] / t1_limits[i]),
            )
            found.append(
                f"T1 {percent_apart(disagreement[worst])} apart from the fit's on average where "
                f"the limit is {percent_apart(t1_limits[worst])}"
            )
        warnings.warn(
            f"PINQI's maps disagree with the measured data or with a plain CG-SENSE + fit at "
            f"{len(bad)} of {len(ratio)} {what}s ({listed}; {'; '.join(found)}): the data "
            "may lie outside what the model was trained on (T1 range, phase, anatomy, "
            "protocol); check these maps against pinqi fit --data (the residual maps show "
            "where).",
            OutOfDistributionWarning,
            stacklevel=stacklevel,
        )
    return bad


def percent_apart(log_difference: float | torch.Tensor) -> str:
    """A mean |ln T1 difference| as the percentage it amounts to, e.g. ``"35 %"``."""
    return f"{100 * math.expm1(float(log_difference)):.0f} %"


def _card_check(checkpoint: str | Path) -> dict:
    """The ``residual_check`` of a model's card (empty for checkpoints without a card)."""
    from pinqi.training.checkpoints import SHIPPED_MODELS, read_checkpoint, shipped_model_path

    name = str(checkpoint)
    path = shipped_model_path(name) if name in SHIPPED_MODELS else Path(checkpoint)
    return read_checkpoint(path).get("card", {}).get("residual_check", {})


def load_residual_check(checkpoint: str | Path) -> ResidualCheck:
    """The calibrated :class:`ResidualCheck` of a model (its card), or the fixed default."""
    return ResidualCheck.from_card(_card_check(checkpoint))


def residual_ratio_limit(checkpoint: str | Path) -> float:
    """The largest residual-ratio limit of a model (its card's ``residual_check.limit``).

    Falls back to :data:`RESIDUAL_RATIO_LIMIT` for Lightning checkpoints and for models
    exported without a calibration. The limit per noise level: :func:`load_residual_check`.
    """
    return float(_card_check(checkpoint).get("limit", RESIDUAL_RATIO_LIMIT))
