"""``pinqi evaluate`` and ``pinqi reconstruct``: PINQI and the baseline on a fixed data set."""

from __future__ import annotations

import csv
import math
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from pinqi.data.datasets import H5Dataset
from pinqi.evaluation.adaptation import Adaptation, AdaptConfig, reconstruct_adapted
from pinqi.evaluation.bart import BartConfig, bart_pics_fit
from pinqi.evaluation.consistency import (
    check_consistency,
    estimate_noise_sigma,
    excess_residual_map,
    kspace_residual,
    load_residual_check,
    percent_apart,
    residual_ratio,
)
from pinqi.evaluation.device import resolve_device
from pinqi.evaluation.fit import fully_sampled_fit
from pinqi.evaluation.signal_check import SignalModelWarning, kspace_signal_problems
from pinqi.external.bart import find_bart
from pinqi.io.grid import SourceGrid
from pinqi.io.staging import staged_folder
from pinqi.metrics import MIN_R1, parameter_metrics, t1_from_r1
from pinqi.nets.pinqi import PINQI
from pinqi.physics import CartesianAcquisition
from pinqi.solvers import ConvergenceWarning
from pinqi.training.checkpoints import load_model

METHODS = ("PINQI", "CG-SENSE + fit")

#: Optional reference methods (``pinqi evaluate --reference NAME``) and their method names.
REFERENCES = {"bart": "bart-pics", "full": "fully sampled fit"}

#: The batch entries the reconstructions read.
INPUTS = ("kspace", "coil_maps", "mask")


@dataclass(frozen=True)
class Reconstructions:
    """Parameter maps of every sample and where the time went.

    Attributes
    ----------
    maps
        Method name (:data:`METHODS`, and the :data:`REFERENCES` that ran) to parameter maps
        ``(n, P, H, W)`` on the CPU.
    seconds
        Wall time in s of ``"data"`` (loading the batches and moving them to the device),
        ``"PINQI"`` and, when they ran, ``"baseline"`` and each reference (by method name,
        e.g. ``"bart-pics"``).
    kspace_residual
        With the baseline: method -> ||A q(p) - k|| / ||k|| per sample ``(n,)``
        (:mod:`pinqi.evaluation.consistency`).
    residual_maps
        With the baseline: ``"PINQI"`` and ``"CG-SENSE + fit"`` -> the per-pixel
        :func:`~pinqi.evaluation.consistency.residual_map` ``(n, H, W)``.
    noise_sigma
        The noise level of each sample estimated from its k-space
        (:func:`~pinqi.evaluation.consistency.estimate_noise_sigma`) ``(n,)``.
    t1_disagreement
        With the baseline: PINQI's T1 against the baseline's
        (:func:`~pinqi.evaluation.consistency.t1_disagreement`) ``(n,)``.
    """

    maps: dict[str, torch.Tensor]
    seconds: dict[str, float]
    kspace_residual: dict[str, torch.Tensor] = field(default_factory=dict)
    residual_maps: dict[str, torch.Tensor] = field(default_factory=dict)
    noise_sigma: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    t1_disagreement: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    @property
    def residual_ratio(self) -> torch.Tensor:
        """PINQI's k-space residual over the baseline's per sample ``(n,)`` (needs both)."""
        return residual_ratio(self.kspace_residual)

    def timing(self) -> str:
        """One line, e.g. ``time: data 0.3 s, PINQI 12.1 s (0.38 s/sample), baseline 4.2 s``.

        References that ran follow, e.g. ``, bart-pics 30.5 s``.
        """
        n = len(self.maps["PINQI"])
        parts = [
            f"data {self.seconds['data']:.1f} s",
            f"PINQI {self.seconds['PINQI']:.1f} s ({self.seconds['PINQI'] / n:.2f} s/sample)",
        ]
        parts += [
            f"{name} {seconds:.1f} s"
            for name, seconds in self.seconds.items()
            if name not in ("data", "PINQI")
        ]
        return "time: " + ", ".join(parts)


def check_protocol(
    model: PINQI,
    model_signal: str,
    dataset: H5Dataset,
    data: Path,
    allow_other_protocol: bool = False,
) -> None:
    """Refuse data whose delays or signal model differ from the model's training protocol.

    A PINQI model's learned priors belong to the delays and the signal model it was trained
    for; applied to another protocol it can be confidently wrong. ``allow_other_protocol``
    lets an expert go on anyway (a warning is emitted and the signal model uses the data's
    delays). A different number of delays or an image size the UNets cannot take always
    raises. See :func:`check_acquisition` for arrays.
    """
    check_acquisition(
        model,
        model_signal,
        dataset.tau,
        dataset.config.signal_model,
        (dataset.config.size, dataset.config.size),
        str(data),
        allow_other_protocol,
    )


def check_acquisition(
    model: PINQI,
    model_signal: str,
    tau: torch.Tensor,
    data_signal: str,
    image_shape: tuple[int, int],
    source: str = "the data",
    allow_other_protocol: bool = False,
) -> None:
    """:func:`check_protocol` for delays ``tau`` (s), a signal model and an image shape."""
    trained = [round(t, 6) for t in model.signal_model.tau.reshape(-1).tolist()]
    delays = [round(t, 6) for t in tau.reshape(-1).tolist()]
    listed = ",".join(f"{t:g}" for t in delays)
    train_hint = (
        f"a model for this protocol: pinqi train --config configs/cpu.yaml --set "
        f"'data.tau=[{listed}]' --set data.signal_model={data_signal}"
    )
    if len(delays) != len(trained):
        raise ValueError(
            f"{source} holds {data_signal} data at {len(delays)} delays {delays} s, but the "
            f"model was trained for {model_signal} at {len(trained)}: {trained} s; "
            f"{train_hint}"
        )
    depth = 2 ** max(len(model.config.image_features), len(model.config.parameter_features))
    if any(n % depth for n in image_shape):
        raise ValueError(f"{source}: image size {image_shape} is not divisible by {depth}")
    same_delays = torch.allclose(tau.to(model.signal_model.tau), model.signal_model.tau)
    if same_delays and data_signal == model_signal:
        return
    difference = (
        f"{source} holds {data_signal} data at delays {delays} s, but the model "
        f"was trained for {model_signal} at {trained} s"
    )
    if not allow_other_protocol:
        raise ValueError(
            f"{difference}. A{train_hint[1:]}; or run this one anyway with "
            "--allow-other-protocol (its learned prior then belongs to another protocol)"
        )
    warnings.warn(f"{difference}; going on as asked, with the data's delays", stacklevel=3)


def _clock(device: torch.device) -> float:
    """``time.perf_counter()`` after the work queued on ``device`` has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def reconstruct_all(
    model: PINQI,
    dataset: H5Dataset,
    batch_size: int,
    baseline: bool,
    progress: bool = True,
    device: str | torch.device = "cpu",
    bart: BartConfig | None = None,
    full: bool = False,
) -> Reconstructions:
    """Parameter maps ``(n, P, H, W)`` of PINQI (and of the baseline, the references) per sample.

    Parameters
    ----------
    model
        The network; it is moved to ``device``.
    dataset
        The samples; each batch's inputs are moved to ``device``.
    batch_size
        Samples per forward pass.
    baseline
        Also run the non-learned baseline (:func:`~pinqi.evaluation.baseline.cg_sense_fit`)
        and measure every method's data residual against it
        (:func:`~pinqi.evaluation.consistency.check_consistency`).
    progress
        Show a progress bar that counts samples.
    device
        Where to reconstruct (see :func:`resolve_device`); the maps come back on the CPU.
    bart
        Also run the BART reference (:func:`~pinqi.evaluation.bart.bart_pics_fit`, method
        ``"bart-pics"``) with these settings; ``pics`` runs on the CPU, its fit on ``device``.
    full
        Also fit the same objects scanned fully sampled
        (:func:`~pinqi.evaluation.fit.fully_sampled_fit`, method ``"fully sampled fit"``,
        noise seeded with 0): the error floor the noise leaves. Needs the ground truth.
    """
    device = resolve_device(device)
    if bart is not None:
        find_bart()
    model.to(device)
    signal_model = model.signal_model
    if not torch.allclose(dataset.tau.to(signal_model.tau), signal_model.tau):
        signal_model.tau = dataset.tau.to(signal_model.tau)  # allowed by check_protocol
    if full and not dataset.has_ground_truth:
        raise ValueError(f"{dataset.path} has no ground truth for the fully sampled fit")
    bart_method, full_method = REFERENCES["bart"], REFERENCES["full"]
    references = [*([bart_method] if bart is not None else []), *([full_method] if full else [])]
    names = [*METHODS[: 1 + baseline], *references]
    maps: dict[str, list[torch.Tensor]] = {m: [] for m in names}
    seconds = {"data": 0.0, "PINQI": 0.0} | ({"baseline": 0.0} if baseline else {})
    seconds |= {method: 0.0 for method in references}
    generator = torch.Generator().manual_seed(0)
    residuals: dict[str, list[torch.Tensor]] = {m: [] for m in names} if baseline else {}
    residual_maps: dict[str, list[torch.Tensor]] = {m: [] for m in METHODS} if baseline else {}
    noise_sigma, disagreement = [], []
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    bar = tqdm(total=len(dataset), unit="sample", disable=not progress)
    with bar, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = _clock(device)
        for batch in loader:
            inputs = tuple(batch[name].to(device) for name in INPUTS)
            noise_sigma.append(estimate_noise_sigma(inputs[0], inputs[2]).cpu())
            loaded = _clock(device)
            seconds["data"] += loaded - start
            maps["PINQI"].append(model(*inputs).parameters[-1].cpu())
            done = _clock(device)
            seconds["PINQI"] += done - loaded
            if baseline:
                check = check_consistency(signal_model, maps["PINQI"][-1].to(device), *inputs)
                maps["CG-SENSE + fit"].append(check.baseline.cpu())
                for method in METHODS:
                    residual_maps[method].append(check.residual_maps[method].cpu())
                    residuals[method].append(check.kspace_residual[method].cpu())
                disagreement.append(check.t1_disagreement.cpu())
                seconds["baseline"] += _clock(device) - done
            for method in references:
                done = _clock(device)
                if method == bart_method:
                    params = bart_pics_fit(signal_model, *inputs, bart)
                else:
                    truth = batch["params"].to(device)
                    params = fully_sampled_fit(
                        signal_model, truth, inputs[1], batch["noise_sigma"], generator
                    )
                maps[method].append(params.cpu())
                seconds[method] += _clock(device) - done
                if baseline:
                    acquisition = CartesianAcquisition(*inputs[1:])
                    value = kspace_residual(signal_model, params.to(device), acquisition, inputs[0])
                    residuals[method].append(value.cpu())
            bar.update(len(inputs[0]))
            start = _clock(device)
    return Reconstructions(
        {name: torch.cat(m) for name, m in maps.items()},
        seconds,
        {name: torch.cat(r) for name, r in residuals.items()},
        {name: torch.cat(r) for name, r in residual_maps.items()},
        torch.cat(noise_sigma),
        torch.cat(disagreement) if disagreement else torch.zeros(0),
    )


def evaluate(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    references: Sequence[str] = (),
    bart: BartConfig | None = None,
    allow_other_protocol: bool = False,
) -> list[dict]:
    """Metrics of PINQI and the baseline per test sample; CSV, summary and figures in ``out``.

    Writes ``metrics.csv`` (columns ``sample, method, t1_nrmse, t1_mae, t1_clamped, m0_nrmse,
    m0_mae, t1_nrmse_short, t1_median_rel``, and for data with tissue labels
    ``t1_nrmse_<tissue>, t1_bias_<tissue>`` for CSF, GM and WM, see
    :func:`~pinqi.metrics.parameter_metrics`; T1 errors in s inside the brain
    mask), ``summary.md`` and the figures ``maps.png`` (|M0| and T1 with error maps,
    like the paper's Fig. 4) and ``distributions.png`` (per-sample T1 nRMSE and MAE, like
    Fig. 5). Prints the summary table and where the time went.

    ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``) is where both methods run.
    ``references`` adds reference methods (:data:`REFERENCES`): ``"bart"`` adds rows of
    method ``bart-pics`` (BART pics with spatial TV, then the baseline's fit) with the
    settings ``bart`` (default :class:`~pinqi.evaluation.bart.BartConfig`); ``"full"`` adds
    rows ``fully sampled fit`` (the pixel-wise fit of the same objects, coils and noise
    level scanned on every line: the error the noise alone leaves). A missing tool
    is reported before anything is computed, and ``out`` is created only once every
    reconstruction has finished, so a failure leaves ``out`` untouched. Data of another
    protocol than the model's are refused unless ``allow_other_protocol``
    (:func:`check_protocol`).

    Raises
    ------
    ValueError
        For an unknown reference name.
    BartNotFoundError
        For ``"bart"`` in ``references`` when ``bart`` is not installed.
    """
    from pinqi.evaluation.figures import plot_distributions, plot_maps

    unknown = sorted(set(references) - set(REFERENCES))
    if unknown:
        raise ValueError(f"unknown reference methods {unknown}; known: {sorted(REFERENCES)}")
    if "bart" in references:
        find_bart()
    device = resolve_device(device)
    model, trained = load_model(checkpoint, map_location=str(device))
    dataset = H5Dataset(data)
    if not dataset.has_ground_truth:
        raise ValueError(f"{data} has no ground truth (params, brain_mask): use pinqi reconstruct")
    check_protocol(model, trained.data.signal_model, dataset, Path(data), allow_other_protocol)
    result = reconstruct_all(
        model,
        dataset,
        batch_size,
        baseline=True,
        device=device,
        bart=(bart or BartConfig()) if "bart" in references else None,
        full="full" in references,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    truth, masks, tissue = dataset.ground_truth()
    rows = []
    for method, prediction in result.maps.items():
        metrics = parameter_metrics(prediction, truth, masks, tissue)
        metrics["kspace_residual"] = result.kspace_residual[method]
        for i in range(len(dataset)):
            rows.append(
                {"sample": i, "method": method, **{k: float(v[i]) for k, v in metrics.items()}}
            )
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows)
    check = load_residual_check(checkpoint)
    ratio, disagreement = result.residual_ratio, result.t1_disagreement
    flagged = check.warn(ratio, disagreement, result.noise_sigma, "sample")
    (out / "summary.md").write_text(
        f"Checkpoint: {checkpoint}\nData: {data} ({len(dataset)} samples)\n\n{summary}\n\n"
        "Errors over the brain-mask pixels. nRMSE = ||x - x_true|| / ||x_true||; MAE = mean "
        f"|x - x_true|, T1 MAE in s. T1 = 1 / max(R1, {MIN_R1:g} 1/s), so T1 is capped at "
        f"{1 / MIN_R1:g} s; t1_clamped is the share (0..1) of mask pixels whose predicted R1 "
        f"< {MIN_R1:g} 1/s (T1 errors of methods with a large share are flattered). "
        "kspace_residual = ||A q(p) - k|| / ||k|| over the sampled k-space: how well the "
        "maps explain the measured data.\n\n"
        f"Data check: {len(flagged)} of {len(dataset)} samples flagged {flagged[:20]} (PINQI's "
        "k-space residual over the plain fit's, or its T1 disagreement with the fit's, above "
        "the model's calibrated limit for the sample's noise level).\n"
    )
    print(summary)
    print(result.timing())
    first = {method: maps[0] for method, maps in result.maps.items()}
    plot_maps(out / "maps.png", truth[0], masks[0], first)
    plot_distributions(out / "distributions.png", rows)
    return rows


def summarise(rows: list[dict]) -> str:
    """Markdown table: mean and standard deviation of every metric per method.

    Samples without a metric's region (NaN, e.g. no CSF in the slice) are left out of it.
    """
    methods = list(dict.fromkeys(r["method"] for r in rows))
    names = [k for k in rows[0] if k not in ("sample", "method")]
    lines = ["| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for method in methods:
        cells = []
        for name in names:
            values = [r[name] for r in rows if r["method"] == method and not math.isnan(r[name])]
            if not values:
                cells.append("-")
                continue
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} +- {spread:.4f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: Samples of a file whose signal :func:`warn_about_signal` looks at.
SIGNAL_CHECK_SAMPLES = 8


def warn_about_signal(dataset: H5Dataset) -> list[str]:
    """Warn where the k-space does not look like the file's signal model; the problems.

    Looks at up to :data:`SIGNAL_CHECK_SAMPLES` evenly spaced samples
    (:func:`~pinqi.evaluation.signal_check.kspace_signal_problems`) and emits one
    :class:`~pinqi.evaluation.signal_check.SignalModelWarning` per problem.
    """
    count = min(len(dataset), SIGNAL_CHECK_SAMPLES)
    picked = [dataset[int(i)] for i in torch.linspace(0, len(dataset) - 1, count).round()]
    inputs = [torch.stack([s[name] for s in picked]) for name in INPUTS]
    problems = kspace_signal_problems(*inputs, dataset.tau, dataset.config.signal_model)
    for problem in problems:
        warnings.warn(f"{dataset.path.name}: {problem}", SignalModelWarning, stacklevel=2)
    return problems


def _input_grid(dataset: H5Dataset, data: str | Path) -> SourceGrid:
    """The scan's own grid of a real-data file, or a clear error."""
    if dataset.source_grid is None:
        raise ValueError(
            f"{data} carries no scan grid (written by pinqi undersample from a NIfTI or DICOM "
            "series), so the maps cannot be put back on an input grid"
        )
    return dataset.source_grid


def reconstruct(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    allow_other_protocol: bool = False,
    check: bool = True,
    input_grid: bool = False,
    adapt: AdaptConfig | None = None,
) -> Path:
    """k-space in, parameter maps out: ``params.h5``, ``t1.nii.gz``, ``m0.nii.gz`` and PNGs.

    The NIfTI maps carry quantity, unit and delays in their description; for real data they
    lie on the scan's grid (:meth:`~pinqi.data.datasets.H5Dataset.output_grid`: the scan's
    affine, scaled if ``pinqi undersample --size`` resampled it), |M0| in the scan's
    intensity. With ``input_grid``, the maps are resampled back onto the scan's own matrix.

    ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``) is where PINQI runs.
    Prints where the time went. Data of another protocol (delays, signal model) than the
    model's are refused unless ``allow_other_protocol`` (:func:`check_protocol`); k-space
    whose signal does not look like the file's signal model is warned about
    (:func:`warn_about_signal`).

    With ``check`` (default), the maps are checked against the data
    (:mod:`pinqi.evaluation.consistency`): the CG-SENSE + fit baseline runs too,
    ``residual.nii.gz`` and ``residual_fit.nii.gz`` hold the per-pixel data residuals of PINQI
    and of the baseline (:func:`~pinqi.evaluation.consistency.residual_map`),
    ``residual_excess.nii.gz`` PINQI's local excess over the baseline
    (:func:`~pinqi.evaluation.consistency.excess_residual_map`), ``params.h5`` also holds them,
    the per-slice k-space residuals, their ratio, its calibrated limit for the slice's
    estimated noise level and the flag ``out_of_distribution``; ``summary.md`` lists them per
    slice, and an :class:`~pinqi.evaluation.consistency.OutOfDistributionWarning` names the
    flagged slices.

    With ``adapt`` (settings of :func:`~pinqi.evaluation.adaptation.adapt_to_slice`; needs
    ``check``), every flagged slice is reconstructed by a copy of the network fine-tuned on
    that slice's own k-space; ``params.h5`` records ``adapted``, ``adapt_steps`` and
    ``residual_ratio_unadapted`` per slice.
    """
    if adapt is not None and not check:
        raise ValueError("adaptation (--adapt) needs the data check: leave out --no-check")
    device = resolve_device(device)
    model, trained = load_model(checkpoint, map_location=str(device))
    dataset = H5Dataset(data)
    check_protocol(model, trained.data.signal_model, dataset, Path(data), allow_other_protocol)
    grid = _input_grid(dataset, data) if input_grid else None  # errors before the work
    warn_about_signal(dataset)
    result = reconstruct_all(model, dataset, batch_size, baseline=check, device=device)
    print(result.timing())
    verdict = None
    if check:
        limits = load_residual_check(checkpoint)
        limit = limits.limit(result.noise_sigma)
        t1_limit = limits.disagreement_limit(result.noise_sigma)
        ratio, disagreement = result.residual_ratio, result.t1_disagreement
        print(
            "data residual ||A q(p) - k|| / ||k||, PINQI over CG-SENSE + fit per slice: "
            f"median {float(ratio.median()):.2f}, max {float(ratio.max()):.2f}; T1 apart from "
            f"the fit's by {percent_apart(disagreement.median())} (median), up to "
            f"{percent_apart(disagreement.max())}"
        )
        flagged = limits.warn(ratio, disagreement, result.noise_sigma)
        verdict = DataCheck(limit, ratio.clone(), flagged, t1_limit, disagreement.clone())
        if adapt is not None:
            target = limits.disagreement_median
            verdict.adaptations.update(
                adapt_slices(model, dataset, result, flagged, adapt, device, target)
            )
    with staged_folder(out) as staging:
        _write_reconstruction(staging, checkpoint, dataset, result, verdict, grid)
    return Path(out)


@dataclass
class DataCheck:
    """What the data check of :func:`reconstruct` found, per slice.

    Attributes
    ----------
    limit
        The model's residual-ratio limit for each slice's noise level ``(n,)``.
    ratio_unadapted
        The residual ratio of the unadapted model's maps ``(n,)``.
    flagged
        The slices whose unadapted ratio or T1 disagreement exceeds its limit.
    disagreement_limit
        The model's T1 disagreement limit for each slice ``(n,)`` (inf without one).
    disagreement_unadapted
        The T1 disagreement of the unadapted model's maps ``(n,)``.
    adaptations
        Slice -> :class:`~pinqi.evaluation.adaptation.Adaptation`, for the adapted slices.
    """

    limit: torch.Tensor
    ratio_unadapted: torch.Tensor
    flagged: list[int]
    disagreement_limit: torch.Tensor
    disagreement_unadapted: torch.Tensor
    adaptations: dict[int, Adaptation] = field(default_factory=dict)


def adapt_slices(
    model: PINQI,
    dataset: H5Dataset,
    result: Reconstructions,
    slices: Sequence[int],
    config: AdaptConfig,
    device: torch.device,
    disagreement_target: float | None = None,
) -> dict[int, Adaptation]:
    """Reconstruct ``slices`` again with networks adapted to each (in place in ``result``).

    ``disagreement_target``: the T1 disagreement with the plain fit each adaptation goes on
    to reach (:func:`~pinqi.evaluation.adaptation.adapt_to_slice`), if any.

    Replaces the slices' PINQI maps, k-space residuals, residual maps and T1 disagreements in
    ``result``; returns each slice's :class:`~pinqi.evaluation.adaptation.Adaptation`. Shows
    progress.
    """
    reports = {}
    for i in tqdm(slices, desc="adapting", unit="slice", disable=not slices):
        inputs = tuple(dataset[i][name][None].to(device) for name in INPUTS)
        fit_residual = float(result.kspace_residual["CG-SENSE + fit"][i])
        fit_maps = result.maps["CG-SENSE + fit"][i : i + 1].to(device)
        adapted = reconstruct_adapted(
            model, *inputs, fit_residual, fit_maps, config, disagreement_target
        )
        reports[i] = adapted.adaptation
        result.maps["PINQI"][i] = adapted.params[0].cpu()
        result.kspace_residual["PINQI"][i] = adapted.kspace_residual[0].cpu()
        result.residual_maps["PINQI"][i] = adapted.residual_map[0].cpu()
        result.t1_disagreement[i] = adapted.t1_disagreement[0].cpu()
    if reports:
        seconds = sum(r.seconds for r in reports.values())
        print(
            f"adapted {len(reports)} slice(s) to their k-space in {seconds:.0f} s "
            f"({seconds / len(reports):.0f} s/slice); residual ratio "
            + ", ".join(
                f"{i}: {r.ratio_before:.2f} -> {r.ratio_after:.2f} ({r.steps} steps)"
                for i, r in reports.items()
            )
        )
    return reports


def _write_reconstruction(
    out: Path,
    checkpoint: str | Path,
    dataset: H5Dataset,
    result: Reconstructions,
    verdict: DataCheck | None,
    input_grid: SourceGrid | None,
) -> None:
    """The files of :func:`reconstruct` in ``out``; ``verdict``: the data check's, if run."""
    from pinqi.evaluation.figures import plot_parameter_maps
    from pinqi.io.nifti import write_maps

    params = result.maps["PINQI"]
    t1 = t1_from_r1(params[:, -1]).numpy()
    m0 = torch.complex(params[:, 0], params[:, 1]).numpy()
    (out / "summary.md").write_text(_reconstruction_summary(checkpoint, dataset, result, verdict))
    if verdict is not None:
        excess = excess_residual_map(*(result.residual_maps[m] for m in METHODS))
    with h5py.File(out / "params.h5", "w") as f:
        f["params"] = params.numpy()
        f["t1"] = t1
        f["m0"] = m0
        f.attrs["checkpoint"] = str(checkpoint)
        f.attrs["conventions"] = "params = [Re M0, Im M0, R1 in 1/s]; t1 in s"
        f["noise_sigma_estimate"] = result.noise_sigma.numpy()
        if verdict is not None:
            f["residual"] = result.residual_maps["PINQI"].numpy()
            f["residual_fit"] = result.residual_maps["CG-SENSE + fit"].numpy()
            f["residual_excess"] = excess.numpy()
            for method, name in zip(
                METHODS, ("kspace_residual", "kspace_residual_fit"), strict=True
            ):
                f[name] = result.kspace_residual[method].numpy()
            f["residual_ratio"] = result.residual_ratio.numpy()
            f["residual_limit"] = verdict.limit.numpy()
            f["t1_disagreement"] = result.t1_disagreement.numpy()
            f["t1_disagreement_limit"] = verdict.disagreement_limit.numpy()
            n = len(params)
            f["out_of_distribution"] = np.isin(np.arange(n), verdict.flagged)
            f["residual_ratio_unadapted"] = verdict.ratio_unadapted.numpy()
            f["adapted"] = np.isin(np.arange(n), list(verdict.adaptations))
            f["adapt_steps"] = np.array(
                [verdict.adaptations[i].steps if i in verdict.adaptations else 0 for i in range(n)]
            )
    maps = {"t1": t1, "m0": np.abs(m0) * dataset.intensity_scale}
    if verdict is not None:
        for method, name in zip(METHODS, ("residual", "residual_fit"), strict=True):
            maps[name] = result.residual_maps[method].numpy() * dataset.intensity_scale
        maps["residual_excess"] = excess.numpy()
    delays = ",".join(f"{v:g}" for v in dataset.tau.tolist())
    write_maps(
        out,
        maps,
        dataset.output_grid(),
        f"pinqi reconstruct, delays {delays} s",
        input_grid,
    )
    for i in range(len(params)):
        plot_parameter_maps(out / f"sample{i:03d}.png", params[i])


def _reconstruction_summary(
    checkpoint: str | Path,
    dataset: H5Dataset,
    result: Reconstructions,
    verdict: DataCheck | None,
) -> str:
    """``summary.md`` of :func:`reconstruct`: per slice the median T1 and the data check."""
    t1 = t1_from_r1(result.maps["PINQI"][:, -1])
    lines = [
        f"Checkpoint: {checkpoint}",
        f"Data: {dataset.path} ({len(t1)} slices), {result.timing()}",
        "",
    ]
    if verdict is None:
        lines += ["| slice | median T1 (s) | noise sigma (est.) |", "|---|---|---|"]
        lines += [
            f"| {i} | {float(t1[i].median()):.3g} | {float(result.noise_sigma[i]):.2g} |"
            for i in range(len(t1))
        ]
        return "\n".join([*lines, "", "The data check was not run (--no-check).", ""])
    ratio, apart = result.residual_ratio, result.t1_disagreement
    lines += [
        "| slice | median T1 (s) | noise sigma (est.) | residual ratio | limit | "
        "T1 apart from fit | limit | flagged | adapted |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i in range(len(t1)):
        flag = "**yes**" if i in verdict.flagged else "no"
        adapted = verdict.adaptations.get(i)
        ratios = f"{float(verdict.ratio_unadapted[i]):.2f}"
        aparts = percent_apart(verdict.disagreement_unadapted[i])
        if adapted is not None:
            ratios += f" -> {float(ratio[i]):.2f}"
            aparts += f" -> {percent_apart(apart[i])}"
        t1_limit = verdict.disagreement_limit[i]
        lines.append(
            f"| {i} | {float(t1[i].median()):.3g} | {float(result.noise_sigma[i]):.2g} | "
            f"{ratios} | {float(verdict.limit[i]):.2f} | {aparts} | "
            f"{percent_apart(t1_limit) if torch.isfinite(t1_limit) else '-'} | {flag} | "
            + (f"{adapted.steps} steps, {adapted.seconds:.0f} s |" if adapted else "no |")
        )
    lines += [
        "",
        "residual ratio = ||A q(p) - k|| of PINQI's maps over that of a plain CG-SENSE + fit "
        "of the same k-space; T1 apart from fit = the mean difference of PINQI's T1 from the "
        "fit's, both averaged over 5 x 5 pixels (the fit's noise averages out, a bias of the "
        "learned prior does not). A slice is flagged where either exceeds the model's limit "
        "for the slice's noise level (calibrated together on validation slices of the model's "
        "training data, see the model card). Flagged maps may be wrong: reconstruct with "
        "--adapt, or compare "
        "them with pinqi fit --data; residual_excess.nii.gz shows where PINQI misses the data. "
        "Adapted slices were reconstructed by the network fine-tuned on their own k-space "
        "(ratio before -> after).",
        "",
    ]
    return "\n".join(lines)
