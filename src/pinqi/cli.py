"""The ``pinqi`` command line."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path


def _demo(args: argparse.Namespace) -> None:
    from pinqi.demo import run_demo

    run_demo(args.out, checkpoint=args.checkpoint, seed=args.seed)


def _simulate(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from pinqi.config import build_dataclass
    from pinqi.data.datasets import SimulatedDataset, write_h5
    from pinqi.data.simulation import TAU_ABLATION, TAU_PAPER, SimulationConfig
    from pinqi.evaluation.figures import plot_sample

    if args.subjects is not None and not args.brainweb:
        raise SystemExit("pinqi simulate: --subjects needs --brainweb DIR (BrainWeb subjects)")
    anatomy = "brainweb" if args.brainweb else "builtin"
    config = SimulationConfig(
        size=args.size,
        tau=TAU_ABLATION if args.tau == "ablation" else TAU_PAPER,
        n_coils=args.coils,
        acceleration=args.acceleration,
        anatomy=anatomy,
        brainweb_dir=str(args.brainweb) if args.brainweb else None,
        orientation=args.orientation,
        subjects=None if args.subjects is None else {args.split: tuple(args.subjects)},
    )
    if args.set:
        settings = asdict(config) | _parse_settings(args.set)
        config = build_dataclass(SimulationConfig, settings, "--set")
    dataset = SimulatedDataset(config, args.split, args.n_samples, seed=args.seed)
    path = write_h5(args.out, dataset, progress=not args.quiet)
    figure = args.figure or path.with_suffix(".png")
    plot_sample(dataset[0], figure)
    print(f"wrote {args.n_samples} {args.split} samples to {path} and a sample figure to {figure}")


def _parse_settings(items: list[str]) -> dict:
    """``KEY=VALUE`` items (values parsed as YAML) as a dict."""
    from pinqi.config import parse_yaml

    settings = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r} must look like key=value")
        settings[key.strip()] = parse_yaml(text, f"--set {item!r}")
    return settings


def _train(args: argparse.Namespace) -> None:
    from pinqi.config import ExperimentConfig
    from pinqi.training.run import train

    overrides = list(args.set or [])
    if args.max_steps is not None:
        overrides.append(f"optim.max_steps={args.max_steps}")
    config = ExperimentConfig.from_yaml(args.config).with_overrides(overrides)
    last = train(config, args.out, resume=args.resume, init=args.init)
    print(f"training finished; last checkpoint: {last}")


def _learning_curve(args: argparse.Namespace) -> None:
    from pinqi.evaluation.learning_curve import learning_curve

    runs = {}
    for item in args.runs:
        label, sep, folder = item.rpartition("=")
        runs[label if sep else Path(folder).name] = Path(folder)
    missing = [str(f) for f in runs.values() if not (f / "logs" / "metrics.csv").is_file()]
    if missing:
        raise SystemExit(f"pinqi learning-curve: no logs/metrics.csv in {', '.join(missing)}")
    columns = tuple(c.strip() for c in args.columns.split(","))
    rows = learning_curve(runs, args.out, columns, args.min_samples)
    for row in rows:
        print(
            f"{row['run']} {row['column']}: {row['value']:.4f} at {row['samples']:,} samples; "
            f"trend ~ samples^-{row['exponent']:.3f} -> {row['at_2x']:.4f} at 2x, "
            f"{row['at_10x']:.4f} at 10x"
        )
    print(f"wrote {Path(args.out) / 'learning_curve.png'} and learning_curve.csv")


def _compare(args: argparse.Namespace) -> None:
    from pinqi.evaluation.compare import Comparison, run_comparison

    comparison = Comparison.from_yaml(args.config)
    only = tuple(n.strip() for n in args.only.split(",")) if args.only else ()
    out = args.out or Path("runs") / comparison.name
    summaries = run_comparison(
        comparison,
        out,
        only,
        train_methods=not args.table_only,
        overrides=tuple(args.set or ()),
        train_only=args.train_only,
    )
    if args.train_only:
        print(f"trained; evaluate with pinqi compare --config {args.config} --out {out}")
        return
    table = comparison.results or out / "compare.csv"
    print(f"{len(summaries)} rows in {table} and {table.with_suffix('.md')}")


def _info(args: argparse.Namespace) -> None:
    from pinqi.config import ExperimentConfig
    from pinqi.nets.methods import build_network, count_parameters

    config = ExperimentConfig.from_yaml(args.config).with_overrides(args.set or [])
    model = build_network(config.method, config.model, config.data.signal_model, config.data.tau)
    paper = {"image_net": 597_323, "parameter_net": 2_235_308}
    if config.method.name == "pinqi":
        print(f"PINQI ({config.name}): T = {config.model.iterations} iterations")
    else:
        print(f"{type(model).__name__} ({config.name}, method {config.method.name})")
    for name, module in model.named_children():
        if name == "signal_model":
            continue
        note = f" (paper, full width: {paper[name]:,d})" if name in paper else ""
        print(f"  {name:14s} {count_parameters(module):>10,d} learnable weights{note}")
    strengths = sum(p.numel() for n, p in model.named_parameters() if n.startswith("raw_"))
    print(f"  {'strengths':14s} {strengths:>10,d} (learned step sizes and strengths)")
    print(f"  {'total':14s} {count_parameters(model):>10,d}")


def _evaluate(args: argparse.Namespace) -> None:
    from pinqi.evaluation.bart import BartConfig
    from pinqi.evaluation.evaluate import evaluate
    from pinqi.external.bart import BartNotFoundError

    settings = {"tv_weight": args.bart_tv, "iterations": args.bart_iterations}
    bart = BartConfig(**{k: v for k, v in settings.items() if v is not None})
    try:
        evaluate(
            args.checkpoint,
            args.data,
            args.out,
            batch_size=args.batch_size,
            device=args.device,
            references=args.reference,
            bart=bart,
            allow_other_protocol=args.allow_other_protocol,
        )
    except (BartNotFoundError, ValueError) as error:
        raise SystemExit(f"pinqi evaluate: {error}") from None
    print(f"wrote {args.out / 'metrics.csv'}, summary.md, maps.png and distributions.png")


def _reconstruct(args: argparse.Namespace) -> None:
    from pinqi.evaluation.adaptation import AdaptConfig
    from pinqi.evaluation.evaluate import reconstruct

    if args.adapt and args.no_check:
        raise SystemExit("pinqi reconstruct: --adapt needs the data check; leave out --no-check")
    steps = {} if args.adapt_steps is None else {"max_steps": args.adapt_steps}
    out = reconstruct(
        args.checkpoint,
        args.data,
        args.out,
        batch_size=args.batch_size,
        device=args.device,
        allow_other_protocol=args.allow_other_protocol,
        check=not args.no_check,
        input_grid=args.input_grid,
        adapt=AdaptConfig(**steps) if args.adapt else None,
    )
    grid = "the scan's own grid" if args.input_grid else "the data's grid"
    print(f"wrote {out / 'params.h5'}, t1.nii.gz, m0.nii.gz (on {grid}), summary.md and PNGs")


def _export(args: argparse.Namespace) -> None:
    from pinqi.evaluation.calibration import calibrate_residual_check
    from pinqi.training.checkpoints import export_model, load_model, model_card

    card = model_card(args.checkpoint, args.notes)
    if args.calibration_samples > 0:
        model, config = load_model(args.checkpoint)
        print(f"calibrating the data-residual check on {args.calibration_samples} slices")
        card["residual_check"] = calibrate_residual_check(
            model,
            config,
            args.calibration_samples,
            args.device,
            false_alarm=args.false_alarm,
            splits=args.calibration_splits,
        )
    out = export_model(args.checkpoint, args.out, card)
    print(f"wrote {out} and {out.with_suffix('.json')}")


def _undersample(args: argparse.Namespace) -> None:
    from pinqi.data.datasets import write_h5
    from pinqi.data.simulation import SimulationConfig
    from pinqi.data.undersample import RealSample, series_images, undersample
    from pinqi.io.series import read_series

    series = read_series(args.images, _delays(args.tau) if args.tau else None)
    images, grid = series_images(series)
    fov = grid.fov_mm
    config = SimulationConfig(
        size=args.size,
        fov_mm=fov[1],
        tau=tuple(series.tau.tolist()),
        n_coils=args.coils,
        acceleration=args.acceleration,
        signal_model=args.model,
    )
    height, width = images.shape[-2:]
    if (height, width) != (args.size, args.size):
        stretch = (
            ""
            if abs(fov[0] - fov[1]) < 1e-3 * fov[1]
            else (
                f"; the {fov[0]:g} x {fov[1]:g} mm field of view is not square, so the pixels "
                "are stretched"
            )
        )
        print(
            f"resampling {height}x{width} ({fov[1] / width:.3g} mm pixels) to "
            f"{args.size}x{args.size} ({fov[1] / args.size:.3g} mm) over the same field of "
            f"view{stretch}; the maps are on the {args.size}x{args.size} grid (pinqi "
            "reconstruct --input-grid puts them back on this one)"
        )
    sample, scale = undersample(images, series.tau.tolist(), config, args.seed)
    attributes = {"source": str(args.images), "intensity_scale": scale, **grid.to_attributes()}
    write_h5(args.out, RealSample(sample, config, args.seed), False, attributes)
    print(f"wrote {args.out} (intensity divided by {scale:.4g}; no ground truth)")


def _import_ismrmrd(args: argparse.Namespace) -> None:
    from pinqi.data.datasets import write_h5
    from pinqi.data.raw import prepare_raw
    from pinqi.data.simulation import SimulationConfig
    from pinqi.data.undersample import RealSample
    from pinqi.io.ismrmrd import read_calibration, read_ismrmrd

    tau = _delays(args.tau) if args.tau else None
    raw = read_ismrmrd(args.raw, tau=tau)
    calibration = read_calibration(args.calibration, raw) if args.calibration else None
    sample = prepare_raw(raw, size=args.size, coil_method=args.coils, calibration=calibration)
    scale = sample.pop("intensity_scale")
    config = SimulationConfig(
        size=sample["kspace"].shape[-1],
        tau=tuple(sample["tau"].tolist()),
        n_coils=sample["kspace"].shape[1],
    )
    attributes = {"source": str(args.raw), "intensity_scale": scale, "prewhitened": raw.prewhitened}
    write_h5(args.out, RealSample(sample, config, seed=-1), False, attributes)
    source = f"the calibration scan {args.calibration}" if args.calibration else "the data"
    print(
        f"wrote {args.out} ({len(sample['tau'])} frames, coil maps by {args.coils} from "
        f"{source}, no ground truth)"
    )


def _sequence(args: argparse.Namespace) -> None:
    from pinqi.sequences.saturation_recovery import SequenceSettings, write_sequence

    settings = SequenceSettings(
        tau=tuple(_delays(args.tau)),
        size=args.size,
        acceleration=args.acceleration,
        seed=args.seed,
    )
    path = write_sequence(args.out, settings)
    print(f"wrote {path}, masks.npy and sequence.json (timing check passed)")


def _fit(args: argparse.Namespace) -> None:
    if args.images is not None:
        _fit_images(args)
        return
    from pinqi.evaluation.fit import fit_file

    if args.model == "look-locker" or args.tau or args.mask:
        raise SystemExit("pinqi fit: --model look-locker, --tau and --mask need --images")
    out = fit_file(args.data, args.model, args.out, device=args.device)
    print(f"wrote {out / 'params.h5'}, t1.nii.gz and m0.nii.gz")


def _fit_images(args: argparse.Namespace) -> None:
    import nibabel as nib
    import numpy as np

    from pinqi.evaluation.series_fit import fit_series, write_series_maps
    from pinqi.io.series import read_series

    tau = _delays(args.tau) if args.tau else None
    series = read_series(args.images, tau)
    mask = None
    if args.mask is not None:
        if not args.mask.is_file():
            raise FileNotFoundError(f"mask not found: {args.mask}")
        mask = np.asarray(nib.load(args.mask).dataobj) != 0
        mask = mask.reshape(series.grid) if mask.size == np.prod(series.grid) else mask
    result = fit_series(series, args.model, mask, args.device, progress=not args.quiet)
    out = write_series_maps(result, series, args.model, args.out)
    t1 = result.maps["t1"][result.mask]
    print(f"{result.method}; {int(result.mask.sum())} voxels, median T1 {np.median(t1):.4g} s")
    if result.at_bound.any() or result.unconverged:
        print(
            f"{int(result.at_bound.sum())} voxels with T1 on a bound of the fit (at_bound.nii.gz), "
            f"{result.unconverged} not converged"
        )
    for problem in result.problems:
        print(f"warning: {problem}", file=sys.stderr)
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")


def _delays(text: str) -> list[float]:
    """``--tau 0.5,1,1.5`` as floats, with a clear error."""
    try:
        return [float(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"--tau must be comma-separated numbers in s, got {text!r}") from None


def _roi(args: argparse.Namespace) -> None:
    import nibabel as nib

    from pinqi.evaluation.roi import rms_deviation, roi_statistics, write_roi_table

    def read(path: Path):
        if not path.is_file():
            raise FileNotFoundError(f"file not found: {path}")
        return nib.load(path).get_fdata()

    if args.out is None:
        args.out = Path("roi.csv")
        if args.out.exists():
            raise ValueError(f"{args.out} exists; give --out to choose the output file")
    reference = read(args.reference) if args.reference else None
    rows = roi_statistics(read(args.map), read(args.labels), reference)
    write_roi_table(rows, args.out)
    for row in rows:
        text = f"ROI {row['roi']:3d}: {row['mean']:.4g} +- {row['std']:.2g} ({row['pixels']} px)"
        if reference is not None:
            text += (
                f", reference {row['reference_mean']:.4g} +- {row['reference_std']:.2g}, "
                f"difference {row['difference_percent']:+.1f} %"
            )
        print(text)
    if reference is not None:
        print(f"RMS deviation from the reference: {rms_deviation(rows):.4g}")
    print(f"wrote {args.out}")


#: Reference methods of ``pinqi evaluate --reference`` (pinqi.evaluation.evaluate.REFERENCES).
REFERENCE_NAMES = ("bart", "full")


def _names(text: str, known: Sequence[str] | None = None) -> list[str]:
    """A comma-separated list of names, e.g. ``"20,49"``; each in ``known`` if given."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    unknown = [name for name in names if known is not None and name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {list(known)}")
    return names


def _device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="torch device: auto, cpu, cuda or cuda:N (default: auto = cuda when available, "
        "else cpu)",
    )


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    from pinqi.training.checkpoints import SHIPPED_MODELS

    parser.add_argument(
        "--checkpoint",
        default="default",
        help="a checkpoint of pinqi train, a model file of pinqi export, or a shipped model: "
        + ", ".join(SHIPPED_MODELS),
    )
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="HDF5 data file written by pinqi simulate, pinqi undersample or pinqi import-ismrmrd",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--batch-size", type=int, default=4, help="slices reconstructed together")
    parser.add_argument(
        "--allow-other-protocol",
        action="store_true",
        help="run the model on data whose delays or signal model differ from its training "
        "protocol (refused by default: its learned prior belongs to another protocol)",
    )
    _device_argument(parser)


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help that names an option's default unless it is unset or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default in (None, False, argparse.SUPPRESS)
        if unset or "default" in text or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


class _HelpfulParser(argparse.ArgumentParser):
    """Sub-command parsers whose ``--help`` shows every option's default."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per task."""
    parser = argparse.ArgumentParser(
        prog="pinqi",
        description="PINQI: physics-informed, learned quantitative MRI reconstruction.",
    )
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        parser_class=_HelpfulParser,
    )
    demo = commands.add_parser(
        "demo",
        help="simulate a test slice, reconstruct it with PINQI and the baseline, write PNG + CSV",
        description="Simulate an 8x undersampled multi-coil saturation-recovery slice (built-in "
        "phantom, test split), reconstruct T1 and M0 with PINQI (the shipped model by default) "
        "and with the non-learned baseline (pixel-wise fit on CG-SENSE), print what each step "
        "did and write DIR/demo.png and DIR/metrics.csv. No download, no GPU.",
    )
    demo.add_argument("--out", type=Path, default=Path("pinqi-demo"), help="output folder")
    demo.add_argument("--checkpoint", default="default", help="model (default: shipped)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the simulated slice")
    demo.set_defaults(run=_demo)

    simulate = commands.add_parser(
        "simulate",
        help="write a simulated data set (k-space, masks, coils, ground truth) to HDF5",
        description="Simulate undersampled saturation-recovery k-space from BrainWeb "
        "anatomies (--brainweb DIR) or the built-in phantom, as in the paper's Sec. 3.1.1, "
        "and write it to an HDF5 file with a sample figure (PNG) beside it.",
    )
    simulate.add_argument("--out", type=Path, required=True, help="output FILE.h5")
    simulate.add_argument(
        "--split",
        choices=("train", "val", "test"),
        default="test",
        help="which subjects (BrainWeb) and augmentations: training ones are random",
    )
    simulate.add_argument("--n-samples", type=int, default=16, help="number of samples")
    simulate.add_argument("--size", type=int, default=192, help="image size in pixels (even)")
    simulate.add_argument("--seed", type=int, default=0, help="data set seed")
    anatomy = simulate.add_mutually_exclusive_group()
    anatomy.add_argument("--brainweb", type=Path, help="folder of BrainWeb model files")
    anatomy.add_argument(
        "--phantom", choices=("builtin",), default="builtin", help="built-in phantom (default)"
    )
    simulate.add_argument(
        "--orientation",
        choices=("axial", "coronal", "sagittal"),
        default="axial",
        help="slice orientation of the BrainWeb volumes",
    )
    simulate.add_argument(
        "--tau",
        choices=("paper", "ablation"),
        default="paper",
        help="saturation times: paper (0.5, 1, 1.5, 2, 8 s) or ablation (8 values)",
    )
    simulate.add_argument("--coils", type=int, default=8, help="number of receiver coils")
    simulate.add_argument("--acceleration", type=float, default=8.0, help="undersampling factor")
    simulate.add_argument(
        "--subjects",
        type=_names,
        help="BrainWeb subjects of the split, comma separated, e.g. 20,49 (only with "
        "--brainweb; all must be in DIR; default: the paper's split)",
    )
    simulate.add_argument("--figure", type=Path, help="sample figure (default: OUT with .png)")
    simulate.add_argument("--quiet", action="store_true", help="no progress bar")
    simulate.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="set a simulation option (YAML syntax, repeatable), e.g. --set fov_mm=220 "
        "--set uniform_probability=1 --set 't1_any_range=[0.25,0.25]' (see "
        "pinqi.data.simulation.SimulationConfig)",
    )
    simulate.set_defaults(run=_simulate)

    train = commands.add_parser(
        "train",
        help="train PINQI on simulated data from a YAML preset (configs/)",
        description="Train PINQI end to end (Lightning): checkpoints and CSV logs in --out. "
        "Multi-GPU/multi-node: set optim.devices/num_nodes/strategy (e.g. ddp) in the YAML; "
        "on a multi-core CPU, optim.cpu_processes splits every step among processes.",
    )
    train.add_argument("--config", type=Path, required=True, help="YAML preset")
    train.add_argument("--out", type=Path, default=Path("runs/pinqi"), help="run folder")
    train.add_argument("--resume", help="checkpoint to resume from, or 'auto' (last.ckpt)")
    train.add_argument("--max-steps", type=int, help="override optim.max_steps")
    train.add_argument(
        "--init",
        metavar="CHECKPOINT",
        help="start from the weights of a checkpoint, exported model or 'default' "
        "(fine-tuning; the architecture must match the preset; ignored when resuming)",
    )
    train.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override a preset value (YAML syntax, repeatable), e.g. --set "
        "'data.tau=[0.05,0.4,1.1,2.5]' --set data.signal_model=inversion-ab; the run folder's "
        "config.yaml records the result",
    )
    train.set_defaults(run=_train)

    curve = commands.add_parser(
        "learning-curve",
        help="validation error against training samples, with a fitted trend",
        description="Plot the validation curves of training runs over training samples, fit "
        "a power law (error = a samples^-b) to each after the pretraining and print what it "
        "predicts for 2x and 10x the samples.",
    )
    curve.add_argument(
        "--run",
        dest="runs",
        action="append",
        required=True,
        metavar="[LABEL=]FOLDER",
        help="run folder of pinqi train (repeatable); the label defaults to the folder name",
    )
    curve.add_argument("--out", type=Path, required=True, help="output folder")
    curve.add_argument(
        "--columns",
        default="val_t1_nrmse",
        help="comma-separated validation metrics of the log (the first is plotted), e.g. "
        "val_t1_nrmse,val_t1_nrmse_csf,val_t1_bias_csf",
    )
    curve.add_argument(
        "--min-samples",
        type=int,
        help="fit the trend from this many samples on (default: after the pretraining)",
    )
    curve.set_defaults(run=_learning_curve)

    evaluate = commands.add_parser(
        "evaluate",
        help="metrics of PINQI and the CG-SENSE baseline on a simulated test set",
        description="Reconstruct every sample with PINQI and with the non-learned baseline "
        "(pixel-wise fit on CG-SENSE), optionally with reference methods (--reference bart,full), "
        "and write per-sample T1/M0 errors inside the brain mask to OUT/metrics.csv, a "
        "summary and figures.",
    )
    _model_arguments(evaluate)
    evaluate.add_argument(
        "--reference",
        action="extend",
        type=lambda text: _names(text, REFERENCE_NAMES),
        default=[],
        metavar="NAME",
        help="add a reference method: bart (BART pics with spatial TV + the baseline's fit, "
        "rows 'bart-pics'; needs the bart command), full (the fit of the same objects "
        "scanned on every line at the same noise level, rows 'fully sampled fit'); "
        "repeatable or comma separated; default: none",
    )
    evaluate.add_argument(
        "--bart-tv",
        type=float,
        help="TV weight of bart pics (default: BartConfig's, chosen on the validation split, "
        "see docs/benchmarks.md)",
    )
    evaluate.add_argument(
        "--bart-iterations",
        type=int,
        help="iterations of bart pics (default: BartConfig's, chosen on the validation split)",
    )
    evaluate.set_defaults(run=_evaluate)

    reconstruct = commands.add_parser(
        "reconstruct",
        help="k-space in, parameter maps out (HDF5, NIfTI, PNG)",
        description="Reconstruct T1 and M0 maps with PINQI: OUT/params.h5, OUT/t1.nii.gz "
        "(T1 in s, one slice per sample), OUT/m0.nii.gz (|M0|), OUT/summary.md and one PNG "
        "per sample. The maps are checked against the data: OUT/residual.nii.gz and "
        "OUT/residual_fit.nii.gz are the per-pixel residuals of PINQI and of a plain CG-SENSE "
        "+ fit, OUT/residual_excess.nii.gz PINQI's local excess; a slice whose residual ratio "
        "exceeds the model's calibrated limit for its noise level is flagged (summary.md, "
        "params.h5, a warning) and, with --adapt, reconstructed by the network fine-tuned on "
        "its own k-space.",
    )
    _model_arguments(reconstruct)
    reconstruct.add_argument(
        "--no-check",
        action="store_true",
        help="skip the data-residual check against CG-SENSE + fit (faster)",
    )
    reconstruct.add_argument(
        "--input-grid",
        action="store_true",
        help="write the NIfTI maps on the scanned series' own matrix and affine (resampled "
        "back when pinqi undersample --size changed it); needs data from pinqi undersample",
    )
    reconstruct.add_argument(
        "--adapt",
        action="store_true",
        help="fine-tune the network on the k-space of every slice the data check flags, "
        "without ground truth, until its maps explain the slice's data as well as the plain "
        "fit (pinqi.evaluation.adaptation; tens of seconds per flagged slice on a CPU)",
    )
    reconstruct.add_argument(
        "--adapt-steps",
        type=int,
        help="at most this many fine-tuning steps per slice (default: AdaptConfig.max_steps "
        "of pinqi.evaluation.adaptation)",
    )
    reconstruct.set_defaults(run=_reconstruct)

    compare = commands.add_parser(
        "compare",
        help="train every method and ablation of a comparison file alike and tabulate them "
        "on one test set",
        description="Train (or resume) each method of the comparison file with the same "
        "budget, evaluate all on the same fixed test set with the non-learned references, "
        "and write the table (CSV + Markdown) and the Fig. 5/6 analogs. Restartable: "
        "finished methods are not retrained.",
    )
    compare.add_argument("--config", type=Path, required=True, help="comparison YAML")
    compare.add_argument(
        "--out", type=Path, help="working folder (default: runs/<comparison name>)"
    )
    compare.add_argument(
        "--only", help="comma-separated method names to run now (default: all not yet done)"
    )
    compare.add_argument(
        "--table-only",
        action="store_true",
        help="train nothing: rebuild the table and figures from the methods done so far",
    )
    compare.add_argument(
        "--train-only",
        action="store_true",
        help="train the methods and evaluate nothing (e.g. on a GPU machine without the test "
        "subjects); a later pinqi compare with the same --out resumes the finished runs "
        "without training and evaluates them",
    )
    compare.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="where and how the methods train, for every method (repeatable), e.g. --set "
        "optim.accelerator=gpu --set optim.num_workers=4 --set data.brainweb_dir=/data/bw",
    )
    compare.set_defaults(run=_compare)

    export = commands.add_parser(
        "export",
        help="write a compact model file with a model card from a checkpoint",
        description="Write the network's weights and configuration as one file that pinqi "
        "reconstruct --checkpoint and the Python API load, with a model card (data, config, "
        "seed, steps, commit, last validation metrics) and the residual check's limit "
        "calibrated on validation slices of the model's training distribution.",
    )
    export.add_argument("--checkpoint", type=Path, required=True, help="Lightning checkpoint")
    export.add_argument("--out", type=Path, required=True, help="output .pt file")
    export.add_argument("--notes", default="", help="free text for the model card")
    export.add_argument(
        "--calibration-samples",
        type=int,
        default=64,
        help="validation slices on which the limits of the data-residual check are set, per "
        "noise band of 32 slices (pinqi.evaluation.calibration; 0: keep the fixed default "
        "limit)",
    )
    export.add_argument(
        "--false-alarm",
        type=float,
        default=0.05,
        help="share of in-distribution slices the calibrated check may flag (default 0.05)",
    )
    export.add_argument(
        "--calibration-splits",
        type=lambda text: _names(text, ("val", "train")),
        default=["val"],
        help="data splits the calibration slices are drawn from, in equal shares: val, or "
        "val,train for the anatomies of the training subjects too (default: val)",
    )
    export.add_argument(
        "--device", default="auto", help="torch device for the calibration: auto, cpu, cuda"
    )
    export.set_defaults(run=_export)

    under = commands.add_parser(
        "undersample",
        help="retrospectively undersample a measured multi-delay image series (NIfTI, DICOM)",
        description="Apply simulated bird-cage coils and the training mask generator to a "
        "reconstructed image series (3D NIfTI, delays on the last axis, complex or magnitude) "
        "and write an HDF5 file in the pinqi simulate layout without ground truth, ready for "
        "pinqi reconstruct. Intensities are normalised (99th percentile of the longest delay "
        "= 1).",
    )
    under.add_argument(
        "--images",
        type=Path,
        required=True,
        help="image series: a NIfTI file, 3D (x, y, delay) or 4D (x, y, z = 1, delay), or a "
        "DICOM folder (complex as magnitude/phase or real/imaginary pairs)",
    )
    under.add_argument(
        "--tau",
        help="delays in s, comma separated, in the order of the images (default: the DICOM "
        "files' InversionTime; required for NIfTI)",
    )
    under.add_argument(
        "--acceleration", type=float, default=8.0, help="undersampling factor of the masks"
    )
    under.add_argument("--coils", type=int, default=8, help="number of simulated coils")
    under.add_argument("--size", type=int, default=96, help="image size of the model")
    under.add_argument(
        "--model",
        choices=("saturation", "inversion", "inversion-ab"),
        default="saturation",
        help="signal model of the series, recorded in the file: reconstruct refuses a model "
        "trained for another one",
    )
    under.add_argument("--seed", type=int, default=0, help="seed of the coils and masks")
    under.add_argument("--out", type=Path, required=True, help="output FILE.h5")
    under.set_defaults(run=_undersample)

    raw = commands.add_parser(
        "import-ismrmrd",
        help="raw multi-coil Cartesian k-space (ISMRMRD) -> HDF5 ready for pinqi reconstruct",
        description="Sort the acquisitions of an ISMRMRD file, remove readout oversampling, "
        "prewhiten with noise scans, derive the masks from the acquired lines, estimate coil "
        "maps from the time-averaged k-space centre (or a calibration scan) and normalise the "
        "intensity.",
    )
    raw.add_argument("--raw", type=Path, required=True, help="ISMRMRD HDF5 file")
    raw.add_argument("--tau", help="delays in s, comma separated (default: header TI)")
    raw.add_argument("--size", type=int, help="crop k-space to SIZE x SIZE (model's size)")
    raw.add_argument(
        "--coils",
        choices=("walsh", "ratio", "espirit"),
        default="walsh",
        help="coil-map estimate: Walsh's adaptive eigenvector, smoothed coil images over "
        "their RSS, or ESPIRiT (BART ecalib; needs >= 11 fully sampled centre lines, e.g. "
        "from --calibration)",
    )
    raw.add_argument(
        "--calibration",
        type=Path,
        help="ISMRMRD file of a separate coil-calibration scan (same field of view, any "
        "matrix; e.g. a fully sampled low-resolution GRE) to estimate the coil maps from",
    )
    raw.add_argument("--out", type=Path, required=True, help="output FILE.h5")
    raw.set_defaults(run=_import_ismrmrd)

    sequence = commands.add_parser(
        "sequence",
        help="write the saturation-recovery Pulseq sequence with its random line masks",
        description="Adiabatic saturation, delay, spoiled GRE readout in centre-out order "
        "(192x192, 1x1x8 mm, 6 degrees by default), per-delay masks from pinqi's generator. "
        "Needs pypulseq (pip install 'pinqi[sequence]').",
    )
    sequence.add_argument("--out", type=Path, required=True, help="output folder")
    sequence.add_argument("--tau", default="0.5,1,1.5,2,8", help="saturation times in s")
    sequence.add_argument("--size", type=int, default=192, help="matrix size (square)")
    sequence.add_argument(
        "--acceleration", type=float, default=8.0, help="undersampling factor of the masks"
    )
    sequence.add_argument("--seed", type=int, default=0, help="seed of the masks")
    sequence.set_defaults(run=_sequence)

    fit = commands.add_parser(
        "fit",
        help="pixel-wise signal-model fit of an image series or of k-space: the non-learned "
        "reference",
        description="--images: fit a measured image series (3D/4D NIfTI with the delays on "
        "the last axis, complex or magnitude, or a folder of DICOM files) voxel by voxel and "
        "write OUT/t1.nii.gz, OUT/m0.nii.gz (M0 in the input's intensity), the other "
        "parameters, OUT/mask.nii.gz, OUT/at_bound.nii.gz and OUT/params.h5 on the input's "
        "grid and affine. Magnitude inversion-recovery and Look-Locker series are fitted with "
        "polarity restoration (RD-NLS-PR). --data: coil-combine the k-space of an HDF5 file "
        "(pinqi simulate layout; CG-SENSE if undersampled) and fit it pixel by pixel.",
    )
    source = fit.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="image series: NIfTI file or DICOM folder")
    source.add_argument(
        "--data",
        type=Path,
        help="HDF5 data file written by pinqi simulate, pinqi undersample or pinqi "
        "import-ismrmrd (k-space: fitted after a CG-SENSE reconstruction)",
    )
    fit.add_argument(
        "--model",
        choices=("saturation", "inversion", "inversion-ab", "look-locker"),
        default="saturation",
        help="signal model; look-locker (MOLLI-type series, --images only) writes T1 and T1*",
    )
    fit.add_argument(
        "--tau",
        help="delays in s, comma-separated, in the order of the images (NIfTI: required; "
        "DICOM: default from InversionTime)",
    )
    fit.add_argument(
        "--mask",
        type=Path,
        help="NIfTI mask on the series' grid (non-zero = fit); default: voxels whose signal at "
        "the longest delay exceeds 5%% of its 99th percentile",
    )
    fit.add_argument("--out", type=Path, required=True, help="output folder")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    _device_argument(fit)
    fit.set_defaults(run=_fit)

    roi = commands.add_parser(
        "roi",
        help="ROI statistics of a parameter map (mean, std; difference to a reference)",
        description="Mean and standard deviation of a map (NIfTI, e.g. t1.nii.gz of pinqi "
        "reconstruct) in every ROI of a label image (NIfTI, 0 = background), optionally with "
        "the % difference and the RMS deviation from a reference map (the paper's Table 1).",
    )
    roi.add_argument("--map", type=Path, required=True, help="parameter map (NIfTI)")
    roi.add_argument("--labels", type=Path, required=True, help="label image (NIfTI)")
    roi.add_argument("--reference", type=Path, help="reference map (NIfTI)")
    roi.add_argument(
        "--out", type=Path, help="output CSV (default: roi.csv, never overwritten silently)"
    )
    roi.set_defaults(run=_roi)

    info = commands.add_parser(
        "info",
        help="print the model's subnetworks and parameter counts",
        description="Build the network of a preset (with its --set overrides) and print its "
        "subnetworks, their learnable weights and the strengths, without training.",
    )
    info.add_argument("--config", type=Path, required=True, help="YAML preset")
    info.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override a preset value, e.g. --set method.name=dopamine (repeatable)",
    )
    info.set_defaults(run=_info)
    return parser


def _joined_negative_values(argv: Sequence[str]) -> list[str]:
    """``--tau -0.1,0.5`` as ``--tau=-0.1,0.5``.

    argparse takes a value that starts with ``-`` for an option only in the ``=`` form.
    """
    out: list[str] = []
    for item in argv:
        if out and out[-1] == "--tau" and item[:1] == "-" and item[1:2].isdigit():
            out[-1] = f"--tau={item}"
        else:
            out.append(item)
    return out


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """A warning as users of the command line read it: one line, no source path."""
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``pinqi`` command line."""
    args = build_parser().parse_args(
        _joined_negative_values(sys.argv[1:] if argv is None else argv)
    )
    formatwarning = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        args.run(args)
    except (FileNotFoundError, ValueError) as error:  # bad input, said in one line
        raise SystemExit(f"pinqi {args.command}: {error}") from None
    finally:
        warnings.formatwarning = formatwarning
