"""``pinqi compare``: every method and ablation trained alike, evaluated on one fixed test set.

A comparison file (YAML, e.g. ``configs/compare/cpu.yaml``) names the methods, each a preset
plus ``section.key=value`` overrides (what makes it that method or ablation), the training
budget every learned method gets (``budget``: the same steps and batch size, so the same
number of training samples), the test set (split ``test``, a fixed seed and size, simulated
from each preset's data without the coverage extras) and the non-learned references.

The command is restartable: each method trains in ``OUT/<name>/run`` (resumed from its last
checkpoint) and is done once ``OUT/<name>/result.json`` exists; the table (CSV + Markdown)
and the figures are rewritten after every finished method, so a comparison can span several
sessions and its partial results can be committed as they come. Training and evaluation may
happen on different machines: ``train_only`` (with ``overrides`` such as
``optim.accelerator=gpu``) trains on one, and a later run elsewhere resumes the finished
checkpoints without training and evaluates them; each row records where it was trained.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pinqi.config import ExperimentConfig, parse_yaml
from pinqi.data.datasets import H5Dataset, SimulatedDataset, write_h5
from pinqi.evaluation.baseline import cg_sense_fit
from pinqi.external.bart import BART_INSTALL_HINT
from pinqi.metrics import TISSUE_CLASSES, parameter_metrics
from pinqi.nets.methods import count_parameters
from pinqi.physics import signal_model
from pinqi.training.clock import training_clock

#: Non-learned references a comparison may list.
REFERENCE_NAMES = ("cg-sense-fit", "bart-pics")

#: Settings ``overrides`` may change: where and how a method trains, never what it is.
PLACEMENT_KEYS = (
    "optim.accelerator",
    "optim.devices",
    "optim.num_nodes",
    "optim.strategy",
    "optim.cpu_processes",
    "optim.num_workers",
    "optim.checkpoint_every_n_steps",
    "data.brainweb_dir",
)

#: Columns of the comparison table, in order.
COLUMNS = (
    "method",
    "group",
    "n_tau",
    "t1_nrmse_mean",
    "t1_nrmse_std",
    "t1_mae_mean",
    "t1_mae_std",
    "m0_nrmse_mean",
    "t1_nrmse_short_mean",
    "t1_median_rel_mean",
    *(f"t1_{kind}_{tissue}_mean" for tissue in TISSUE_CLASSES for kind in ("nrmse", "bias")),
    "n_params",
    "train_minutes",
    "trained_on",
    "inference_seconds_per_slice",
    "training_samples",
)


@dataclass(frozen=True)
class MethodEntry:
    """One row of the comparison: a preset and the overrides that make the method."""

    name: str
    preset: Path
    overrides: tuple[str, ...] = ()
    group: str = "method"


@dataclass(frozen=True)
class Comparison:
    """A comparison file (see the module docstring)."""

    name: str
    methods: tuple[MethodEntry, ...]
    budget: dict = field(default_factory=dict)
    common: tuple[str, ...] = ()
    references: tuple[str, ...] = REFERENCE_NAMES
    test_samples: int = 32
    test_seed: int = 2026
    results: Path | None = None
    bart: dict = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Comparison:
        """Read and check a comparison file; presets are relative to it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"comparison file not found: {path}")
        values = parse_yaml(path.read_text(), str(path)) or {}
        if not isinstance(values, dict):
            raise ValueError(
                f"{path} must hold a mapping (name:, methods:, ...), got {type(values).__name__}"
            )
        known = {"name", "methods", "budget", "common", "references", "test", "results", "bart"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
        if not values.get("methods"):
            raise ValueError(f"{path}: no methods")
        entries = []
        for name, entry in values["methods"].items():
            entry = entry or {}
            extra = sorted(set(entry) - {"preset", "set", "group"})
            if extra or "preset" not in entry:
                raise ValueError(
                    f"{path}: method {name!r} needs 'preset' (and may have 'set', 'group'); "
                    f"got {sorted(entry)}"
                )
            entries.append(
                MethodEntry(
                    name,
                    (path.parent / entry["preset"]).resolve(),
                    tuple(entry.get("set", ())),
                    entry.get("group", "method"),
                )
            )
        references = tuple(values.get("references", REFERENCE_NAMES))
        bad = sorted(set(references) - set(REFERENCE_NAMES))
        if bad:
            raise ValueError(f"{path}: unknown references {bad}; known: {REFERENCE_NAMES}")
        test = values.get("test", {})
        results = values.get("results")
        return cls(
            name=values.get("name", path.stem),
            methods=tuple(entries),
            budget=dict(values.get("budget", {})),
            common=tuple(values.get("common", ())),
            references=references,
            test_samples=int(test.get("n_samples", 32)),
            test_seed=int(test.get("seed", 2026)),
            results=Path(results) if results else None,
            bart=dict(values.get("bart", {})),
        )

    def experiment(self, entry: MethodEntry) -> ExperimentConfig:
        """The training configuration of ``entry``.

        Preset, then the common settings, its overrides and the budget (which wins, so that
        every method trains on as many samples).
        """
        budget = [f"optim.{k}={json.dumps(v)}" for k, v in self.budget.items()]
        overrides = [*self.common, *entry.overrides, f"name={entry.name}", *budget]
        base = ExperimentConfig.from_yaml(entry.preset)
        return _with_top_level(base, overrides)


def _with_top_level(config: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """:meth:`ExperimentConfig.with_overrides` that also takes top-level keys (``name=...``)."""
    values = config.to_dict()
    nested = []
    for item in overrides:
        key, _, value = item.partition("=")
        if "." not in key:
            values[key.strip()] = parse_yaml(value, f"override {item!r}")
        else:
            nested.append(item)
    return ExperimentConfig.from_dict(values).with_overrides(nested)


def _test_set(config: ExperimentConfig, comparison: Comparison, out: Path) -> H5Dataset:
    """The fixed test set of ``config``'s data (cached in ``out`` by its delays and model)."""
    data = config.data.without_coverage()
    key = f"test_{data.signal_model}_{len(data.tau)}tau_{data.size}px_seed{comparison.test_seed}"
    path = out / f"{key}.h5"
    if not path.is_file():
        dataset = SimulatedDataset(data, "test", comparison.test_samples, comparison.test_seed)
        write_h5(path, dataset, progress=False)
    return H5Dataset(path)


def _rows(name: str, params: torch.Tensor, dataset: H5Dataset) -> list[dict]:
    truth, masks, tissue = dataset.ground_truth()
    metrics = parameter_metrics(params, truth, masks, tissue)
    return [
        {"sample": i, "method": name} | {k: float(v[i]) for k, v in metrics.items()}
        for i in range(len(dataset))
    ]


def _summary(rows: list[dict], **extra: object) -> dict:
    """Mean and spread (sample standard deviation) over the test slices, and ``extra``."""

    def spread(values: list[float]) -> float:
        return statistics.stdev(values) if len(values) > 1 else 0.0

    t1, mae, m0 = ([r[key] for r in rows] for key in ("t1_nrmse", "t1_mae", "m0_nrmse"))
    # the finer T1 metrics, where the rows have them (rows of older runs do not); samples
    # without a region (NaN) are left out of its mean
    finer = {}
    for column in COLUMNS:
        key = column.removesuffix("_mean")
        if column.endswith("_mean") and key not in ("t1_nrmse", "t1_mae", "m0_nrmse"):
            values = [float(r[key]) for r in rows if key in r and not math.isnan(float(r[key]))]
            if values:
                finer[column] = statistics.fmean(values)
    return (
        {
            "t1_nrmse_mean": statistics.fmean(t1),
            "t1_nrmse_std": spread(t1),
            "t1_mae_mean": statistics.fmean(mae),
            "t1_mae_std": spread(mae),
            "m0_nrmse_mean": statistics.fmean(m0),
        }
        | finer
        | extra
    )


def _write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _train_method(
    entry: MethodEntry, comparison: Comparison, out: Path, overrides: tuple[str, ...] = ()
) -> Path:
    """Train (or resume) one method in ``OUT/<name>/run``; its last checkpoint."""
    from pinqi.training.run import train

    config = _with_top_level(comparison.experiment(entry), list(overrides))
    return train(config, out / entry.name / "run", resume="auto")


def _run_method(
    entry: MethodEntry, comparison: Comparison, out: Path, overrides: tuple[str, ...] = ()
) -> dict:
    """Train (or resume) one method, evaluate it on its test set, store its result."""
    from pinqi.evaluation.evaluate import reconstruct_all
    from pinqi.training.checkpoints import load_model, read_checkpoint, samples_trained

    folder = out / entry.name
    last = _train_method(entry, comparison, out, overrides)
    # the whole training time and its devices travel in the checkpoint (resumes, moves)
    clock = training_clock(last) or {"seconds": float("nan"), "devices": []}
    config = comparison.experiment(entry)
    model, _ = load_model(last)
    dataset = _test_set(config, comparison, out)
    result = reconstruct_all(model, dataset, 4, baseline=False, progress=False)
    rows = _rows(entry.name, result.maps["PINQI"], dataset)
    _write_rows(folder / "metrics.csv", rows)
    summary = {"method": entry.name, "group": entry.group, "n_tau": len(config.data.tau)}
    summary |= _summary(
        rows,
        n_params=count_parameters(model),
        train_minutes=clock["seconds"] / 60,
        trained_on=" + ".join(clock["devices"]),
        inference_seconds_per_slice=result.seconds["PINQI"] / len(dataset),
        training_samples=samples_trained(read_checkpoint(last), config.optim.batch_size),
    )
    (folder / "result.json").write_text(json.dumps(summary, indent=2))
    return summary


def _run_reference(
    name: str, config: ExperimentConfig, comparison: Comparison, out: Path, main: bool
) -> dict:
    """A non-learned reference on the test set of ``config``'s delays.

    Its row is ``name``, or ``name (N delays)`` when the delays are not those of the
    comparison's first method (``main``).
    """
    from pinqi.evaluation.bart import BartConfig, bart_pics_fit

    n_tau = len(config.data.tau)
    label = _reference_label(name, n_tau, main)
    folder = out / _folder_name(label)
    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    dataset = _test_set(config, comparison, out)
    model = signal_model(config.data.signal_model, dataset.tau)
    maps, start = [], time.perf_counter()
    bart = BartConfig(**comparison.bart)
    for i in range(0, len(dataset), 4):
        batch = [dataset[j] for j in range(i, min(i + 4, len(dataset)))]
        inputs = [torch.stack([s[k] for s in batch]) for k in ("kspace", "coil_maps", "mask")]
        if name == "cg-sense-fit":
            maps.append(cg_sense_fit(model, *inputs))
        else:
            maps.append(bart_pics_fit(model, *inputs, bart))
    rows = _rows(label, torch.cat(maps), dataset)
    folder.mkdir(parents=True, exist_ok=True)
    _write_rows(folder / "metrics.csv", rows)
    summary = {"method": label, "group": "reference", "n_tau": n_tau} | _summary(
        rows,
        n_params=0,
        train_minutes=0.0,
        inference_seconds_per_slice=(time.perf_counter() - start) / len(dataset),
        training_samples=0,
    )
    done.write_text(json.dumps(summary, indent=2))
    return summary


def write_table(summaries: list[dict], csv_path: Path) -> None:
    """The comparison table as CSV and, beside it, Markdown (``.md``)."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows({k: s.get(k, "") for k in COLUMNS} for s in summaries)
    lines = [
        "| method | group | delays | T1 nRMSE | T1 MAE [s] | M0 nRMSE | T1 nRMSE T1<2s "
        "| CSF nRMSE / bias [s] | GM nRMSE / bias [s] | WM nRMSE / bias [s] | weights "
        "| train [min] | trained on | s/slice |",
        "|---" * 14 + "|",
    ]
    for s in summaries:
        tissues = " | ".join(
            _cells(s, f"t1_nrmse_{t}_mean", f"t1_bias_{t}_mean") for t in TISSUE_CLASSES
        )
        lines.append(
            f"| {s['method']} | {s['group']} | {s['n_tau']} | {s['t1_nrmse_mean']:.3f} +- "
            f"{s['t1_nrmse_std']:.3f} | {s['t1_mae_mean']:.3f} +- {s['t1_mae_std']:.3f} | "
            f"{s['m0_nrmse_mean']:.3f} | {_cells(s, 't1_nrmse_short_mean')} | {tissues} | "
            f"{s['n_params']:,d} | {s['train_minutes']:.0f} | "
            f"{s.get('trained_on') or '-'} | {s['inference_seconds_per_slice']:.2f} |"
        )
    csv_path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def _cells(summary: dict, *columns: str) -> str:
    """``columns`` of a summary as ``a / b`` with 3 decimals; ``-`` where a row lacks them."""
    values = [summary.get(c) for c in columns]
    if any(v in (None, "") for v in values):
        return "-"
    return " / ".join(
        f"{float(v):+.3f}" if "bias" in c else f"{float(v):.3f}"
        for c, v in zip(columns, values, strict=True)
    )


def plot_comparison(out: Path, summaries: list[dict], folder: Path) -> list[Path]:
    """Fig. 5 (methods and references) and Fig. 6 (ablations) analogs from per-sample rows."""
    from pinqi.evaluation.figures import plot_distributions

    written = []
    folder.mkdir(parents=True, exist_ok=True)
    figures = {"fig5_methods.png": "method", "fig6_ablations.png": "ablation"}
    for figure, group in figures.items():
        delays = {s["n_tau"] for s in summaries if s["group"] == group}
        rows = []
        for s in summaries:
            if s["n_tau"] not in delays or s["group"] not in (group, "reference"):
                continue
            path = out / _folder_name(s["method"]) / "metrics.csv"
            if path.is_file():
                label = s["method"].removeprefix(f"{group}-")  # "ablation-no-solver" -> "no-solver"
                rows += [
                    {
                        "method": label,
                        "t1_nrmse": float(r["t1_nrmse"]),
                        "t1_mae": float(r["t1_mae"]),
                    }
                    for r in csv.DictReader(open(path))
                ]
        if rows:
            written.append(plot_distributions(folder / figure, rows))
    return written


def _reference_label(name: str, n_tau: int, main: bool) -> str:
    """A reference's row: ``name`` on the first method's delays, else ``name (N delays)``."""
    return name if main else f"{name} ({n_tau} delays)"


def _folder_name(method: str) -> str:
    """The working folder of a table row (reference rows carry spaces and parentheses)."""
    return method.replace(" ", "_").replace("(", "").replace(")", "")


def _archive(out: Path, archive: Path, folder: str) -> None:
    """Copy a finished row's ``result.json`` and ``metrics.csv`` beside the table."""
    archive.mkdir(parents=True, exist_ok=True)
    for name, suffix in (("result.json", ".json"), ("metrics.csv", ".csv")):
        source = out / folder / name
        if source.is_file():
            shutil.copyfile(source, archive / f"{folder}{suffix}")


def _restore(out: Path, archive: Path, folder: str) -> bool:
    """Bring an archived row back into ``out`` (a new machine, the run folders lost)."""
    if (out / folder / "result.json").is_file():
        return True
    if not (archive / f"{folder}.json").is_file():
        return False
    (out / folder).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(archive / f"{folder}.json", out / folder / "result.json")
    if (archive / f"{folder}.csv").is_file():
        shutil.copyfile(archive / f"{folder}.csv", out / folder / "metrics.csv")
    return True


def run_comparison(
    comparison: Comparison,
    out: str | Path,
    only: tuple[str, ...] = (),
    train_methods: bool = True,
    overrides: tuple[str, ...] = (),
    train_only: bool = False,
) -> list[dict]:
    """Train and evaluate every method not yet done (or only those in ``only``).

    Finished rows are also kept beside the table (``<results without suffix>/rows/``, small
    files meant to be committed), so that a comparison continues on another machine without
    its run folders. With ``train_methods=False`` nothing is trained: the table and figures
    are rebuilt from the rows done so far (the references are still evaluated).
    ``overrides`` (``section.key=value``) change where and how the methods train, not what
    they are (e.g. ``optim.accelerator=gpu``, ``optim.num_workers=4``,
    ``data.brainweb_dir=...``); with ``train_only`` the methods are trained and nothing is
    evaluated or tabulated (a machine without the test subjects).

    Returns the summaries of everything done so far, after rewriting the table and figures.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = [m.name for m in comparison.methods]
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise ValueError(f"--only names unknown methods {unknown}; the file has {names}")
    barred = [o for o in overrides if o.split("=", 1)[0].strip() not in PLACEMENT_KEYS]
    if barred:
        raise ValueError(
            f"--set {barred}: a comparison may only change where its methods train "
            f"({', '.join(PLACEMENT_KEYS)}); what a method is belongs in the comparison file"
        )
    table = comparison.results or out / "compare.csv"
    archive = table.with_suffix("") / "rows"
    summaries: dict[str, dict] = {}

    def refresh() -> list[dict]:
        ordered = [summaries[n] for n in names if n in summaries]
        ordered += [s for n, s in summaries.items() if n not in names]
        if ordered:
            for summary in ordered:
                _archive(out, archive, _folder_name(summary["method"]))
            write_table(ordered, table)
            plot_comparison(out, ordered, table.with_suffix(""))
        return ordered

    taus = {}
    for entry in comparison.methods:
        config = comparison.experiment(entry)
        taus[len(config.data.tau)] = config
        if _restore(out, archive, entry.name):
            summaries[entry.name] = json.loads((out / entry.name / "result.json").read_text())
        elif train_methods and (not only or entry.name in only):
            if train_only:
                print(f"[{comparison.name}] training {entry.name}")
                _train_method(entry, comparison, out, overrides)
                continue
            print(f"[{comparison.name}] training and evaluating {entry.name}")
            summaries[entry.name] = _run_method(entry, comparison, out, overrides)
            refresh()
    if train_only:
        return [summaries[n] for n in names if n in summaries]
    references = list(comparison.references)
    if "bart-pics" in references and shutil.which("bart") is None:
        print(f"[{comparison.name}] bart is not installed: no bart-pics rows ({BART_INSTALL_HINT})")
        references.remove("bart-pics")
    for i, config in enumerate(taus.values()):
        for name in references:
            label = _reference_label(name, len(config.data.tau), main=i == 0)
            _restore(out, archive, _folder_name(label))
            summary = _run_reference(name, config, comparison, out, main=i == 0)
            summaries[summary["method"]] = summary
    return refresh()
