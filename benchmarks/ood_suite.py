"""The data check on an out-of-distribution suite: is every slice where PINQI fails flagged?

For each shipped model, simulates its own protocol (96 x 96, its delays, 8 coils, 8x) on the
test split and shifts one thing at a time: test-object phantoms of uniform T1 0.25 s and 3 s,
tube phantoms with T1 0.3-1.5 s, every T1 x 1.3, the phase a scanner delivers, 4 and 16 coils,
less and more noise. Per condition: PINQI's and CG-SENSE + fit's T1 nRMSE (brain or object
mask; medians over the slices), the share of slices the model's calibrated check flags
(residual ratio or T1 disagreement above its limit, :mod:`pinqi.evaluation.calibration`) and
how many of the slices where PINQI's T1 nRMSE exceeds 1.5 x the fit's ("failed") it flags.
The in-distribution rows measure the false alarms. For the models in ``--adapt-models``,
flagged slices are also reconstructed after scan-specific adaptation
(:mod:`pinqi.evaluation.adaptation`, default settings, adapting until T1 agrees with the fit
as on the model's typical calibration slice; every flagged slice of the in-distribution set,
the first ``--adapt-slices`` of each other condition, for time) and their T1 nRMSE, steps and
time recorded in a second table (unflagged slices keep their maps, as ``pinqi reconstruct
--adapt`` does).

    python benchmarks/ood_suite.py --brainweb ../shared/data/brainweb \\
        --out docs/results/ood-suite [--slices 16] [--split test] [--adapt-models default]
        [--conditions "in distribution"] [--in-distribution-slices 64]

Writes ``slices.csv`` (one row per model, condition and slice) and ``table.md``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
import warnings
from pathlib import Path

import torch

from pinqi.data.datasets import SimulatedDataset
from pinqi.evaluation.adaptation import reconstruct_adapted
from pinqi.evaluation.consistency import load_residual_check
from pinqi.evaluation.evaluate import INPUTS, reconstruct_all
from pinqi.metrics import parameter_metrics
from pinqi.training.checkpoints import load_model

MODELS = ("default", "gpu-brainweb", "cpu-brainweb", "cpu-phantom")

#: Condition -> SimulationConfig changes; the in-distribution condition changes nothing.
SUITE: dict[str, dict] = {
    "in distribution": {},
    "uniform phantoms, T1 0.25 s": {"uniform_probability": 1.0, "t1_any_range": (0.25, 0.25)},
    "uniform phantoms, T1 3 s": {"uniform_probability": 1.0, "t1_any_range": (3.0, 3.0)},
    "tube phantoms, T1 0.3-1.5 s": {"uniform_probability": 1.0, "t1_any_range": (0.3, 1.5)},
    "T1 x 1.3": {"t1_factor": 1.3},
    "scanner phase": {"phase_any_probability": 1.0},
    "4 coils": {"n_coils": 4},
    "16 coils": {"n_coils": 16},
    "noise sigma 0.0005": {"noise_sigma": (0.0005, 0.0005)},
    "noise sigma 0.06": {"noise_sigma": (0.06, 0.06)},
}

#: PINQI "failed" on a slice where its T1 nRMSE exceeds this factor times the fit's.
FAILED_FACTOR = 1.5


def run_condition(model, data, split: str, n: int, seed: int, check, adapt: bool) -> list[dict]:
    """Per-slice rows of one model on one condition (with ``adapt``: the adapted error)."""
    dataset = SimulatedDataset(data, split, n, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = reconstruct_all(model, dataset, 4, baseline=True, progress=False)
    samples = [dataset[i] for i in range(n)]
    truth = torch.stack([s["params"] for s in samples])
    masks = torch.stack([s["brain_mask"] for s in samples])
    errors = {
        m: parameter_metrics(result.maps[m], truth, masks)["t1_nrmse"]
        for m in ("PINQI", "CG-SENSE + fit")
    }
    limit = check.limit(result.noise_sigma)
    t1_limit = check.disagreement_limit(result.noise_sigma)
    ratio, apart = result.residual_ratio, result.t1_disagreement
    flagged = check.flags(ratio, apart, result.noise_sigma)
    adapted = {}
    for i in torch.nonzero(flagged).flatten().tolist()[:adapt]:
        inputs = [samples[i][k][None] for k in INPUTS]
        fit = float(result.kspace_residual["CG-SENSE + fit"][i])
        fit_maps = result.maps["CG-SENSE + fit"][i : i + 1]
        slice_ = reconstruct_adapted(
            model, *inputs, fit, fit_maps, disagreement_target=check.disagreement_median
        )
        error = parameter_metrics(slice_.params, truth[i : i + 1], masks[i : i + 1])["t1_nrmse"]
        adapted[i] = (float(error[0]), slice_.adaptation)
    return [
        {
            "slice": i,
            "noise_sigma": float(samples[i]["noise_sigma"]),
            "noise_sigma_estimate": float(result.noise_sigma[i]),
            "t1_nrmse_pinqi": float(errors["PINQI"][i]),
            "t1_nrmse_fit": float(errors["CG-SENSE + fit"][i]),
            "residual_ratio": float(ratio[i]),
            "limit": float(limit[i]),
            "t1_disagreement": float(apart[i]),
            "t1_disagreement_limit": float(t1_limit[i]),
            "flagged": bool(flagged[i]),
            "failed": bool(errors["PINQI"][i] > FAILED_FACTOR * errors["CG-SENSE + fit"][i]),
            "t1_nrmse_adapted": adapted[i][0] if i in adapted else float(errors["PINQI"][i]),
            "adapt_steps": adapted[i][1].steps if i in adapted else 0,
            "adapt_seconds": adapted[i][1].seconds if i in adapted else 0.0,
        }
        for i in range(n)
    ]


def table(rows: list[dict]) -> str:
    """Markdown: per model and condition, medians, flagged share and failed slices caught."""
    lines = [
        "| model | data | PINQI T1 nRMSE | CG-SENSE + fit | flagged | PINQI failed | "
        "failed and flagged |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = list(dict.fromkeys((r["model"], r["condition"]) for r in rows))
    for model, condition in keys:
        group = [r for r in rows if r["model"] == model and r["condition"] == condition]
        median = {
            k: float(torch.tensor([r[k] for r in group]).median())
            for k in ("t1_nrmse_pinqi", "t1_nrmse_fit")
        }
        flagged = sum(r["flagged"] for r in group)
        failed = sum(r["failed"] for r in group)
        caught = sum(r["failed"] and r["flagged"] for r in group)
        lines.append(
            f"| {model} | {condition} | {median['t1_nrmse_pinqi']:.3f} | "
            f"{median['t1_nrmse_fit']:.3f} | {flagged}/{len(group)} | {failed} | "
            f"{caught}/{failed} |"
        )
    return "\n".join(lines)


def adaptation_table(rows: list[dict]) -> str:
    """Markdown: the adapted slices of each model and condition, before and after."""
    lines = [
        "| model | data | adapted slices | PINQI T1 nRMSE | adapted | CG-SENSE + fit | "
        "steps | s per slice | mean T1 nRMSE of all slices, unadapted -> with --adapt |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = list(dict.fromkeys((r["model"], r["condition"]) for r in rows if r["adapted_run"]))
    for model, condition in keys:
        group = [r for r in rows if r["model"] == model and r["condition"] == condition]
        done = [r for r in group if r["adapt_steps"] > 0]
        if not done:
            lines.append(f"| {model} | {condition} | 0 | - | - | - | - | - | - |")
            continue

        def median(key: str, chosen: list[dict] = done) -> float:
            return float(torch.tensor([r[key] for r in chosen]).median())

        before = sum(r["t1_nrmse_pinqi"] for r in group) / len(group)
        after = sum(r["t1_nrmse_adapted"] for r in group) / len(group)
        lines.append(
            f"| {model} | {condition} | {len(done)} of {sum(r['flagged'] for r in group)} "
            f"flagged | {median('t1_nrmse_pinqi'):.3f} | {median('t1_nrmse_adapted'):.3f} | "
            f"{median('t1_nrmse_fit'):.3f} | {median('adapt_steps'):.0f} | "
            f"{median('adapt_seconds'):.0f} | {before:.4f} -> {after:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brainweb", required=True, help="BrainWeb folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--slices", type=int, default=16, help="slices per condition")
    parser.add_argument(
        "--in-distribution-slices", type=int, default=64, help="slices for the false alarms"
    )
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument(
        "--conditions",
        help="conditions to run, separated by ';' (names hold commas; default: the whole suite)",
    )
    parser.add_argument(
        "--adapt-models", default="default", help="models whose flagged slices are adapted"
    )
    parser.add_argument(
        "--adapt-slices",
        type=int,
        default=4,
        help="flagged slices adapted per out-of-distribution condition",
    )
    args = parser.parse_args()
    conditions = args.conditions.split(";") if args.conditions else list(SUITE)
    unknown = sorted(set(conditions) - set(SUITE))
    if unknown:
        parser.error(f"unknown conditions {unknown}; the suite has {list(SUITE)}")
    torch.manual_seed(0)
    rows = []
    for name in args.models.split(","):
        model, config = load_model(name)
        check = load_residual_check(name)
        data = config.data
        if data.anatomy == "brainweb":
            data = dataclasses.replace(data, brainweb_dir=args.brainweb)
        for condition in conditions:
            change = SUITE[condition]
            start = time.perf_counter()
            n = args.in_distribution_slices if not change else args.slices
            adapt = 0
            if name in args.adapt_models.split(","):
                adapt = n if not change else args.adapt_slices
            found = run_condition(
                model, dataclasses.replace(data, **change), args.split, n, args.seed, check, adapt
            )
            rows += [
                {"model": name, "condition": condition, "adapted_run": adapt > 0, **r}
                for r in found
            ]
            print(f"{name}, {condition}: {time.perf_counter() - start:.0f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "slices.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = table(rows) + "\n\n" + adaptation_table(rows)
    (args.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
