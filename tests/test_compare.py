"""pinqi compare: methods trained alike, one test set, a restartable table."""

import csv

import numpy as np
import pytest
import torch
import yaml

from pinqi.cli import main
from pinqi.config import ExperimentConfig
from pinqi.data.datasets import H5Dataset, SimulatedDataset
from pinqi.evaluation.baseline import cg_sense_fit
from pinqi.evaluation.compare import COLUMNS, Comparison
from pinqi.physics import SaturationRecovery
from pinqi.training.checkpoints import load_model
from pinqi.training.clock import training_clock

from conftest import nrmse

TINY = {
    "name": "tiny",
    "data": {"size": 16, "n_coils": 4, "acceleration": 2.0, "tau": [0.5, 1.0, 2.0]},
    "model": {
        "iterations": 1,
        "image_features": [8, 16],
        "parameter_features": [8, 16],
        "image_norm_groups": 4,
        "parameter_norm_groups": 4,
        "cg_iterations": 3,
        "fit_iterations": 3,
    },
    "optim": {
        "samples_per_epoch": 4,
        "val_samples": 2,
        "warmup_steps": 1,
        "num_workers": 0,
        "accelerator": "cpu",
        "devices": 1,
        "pretrain_epochs": 1,
    },
}


def t1_nrmse_per_sample(method, dataset) -> list[float]:
    """T1 nRMSE in the brain of ``method``'s maps (a function of one sample's inputs), one
    sample at a time, computed here in numpy."""
    errors = []
    with torch.no_grad():
        for i in range(len(dataset)):
            sample = dataset[i]
            params = method(*(sample[k][None] for k in ("kspace", "coil_maps", "mask")))[0]
            t1 = 1 / np.maximum(params[-1].numpy(), 0.1)
            errors.append(nrmse(t1, 1 / sample["params"][-1].numpy(), sample["brain_mask"]))
    return errors


def network_method(checkpoint):
    model, _ = load_model(checkpoint)
    return lambda *inputs: model(*inputs).parameters[-1]


def check_row(row, errors):
    """The table's mean and spread are those of the independently computed errors."""
    assert float(row["t1_nrmse_mean"]) == pytest.approx(np.mean(errors), rel=1e-3)
    assert float(row["t1_nrmse_std"]) == pytest.approx(np.std(errors, ddof=1), rel=1e-2)


@pytest.fixture
def comparison(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    spec = {
        "name": "tiny-compare",
        "results": str(tmp_path / "table.csv"),
        "test": {"n_samples": 3, "seed": 5},
        "budget": {"max_steps": 3, "batch_size": 2},
        "references": ["cg-sense-fit"],
        "methods": {
            "pinqi": {"preset": "tiny.yaml"},
            "mantis": {
                "preset": "tiny.yaml",
                "set": ["method.name=mantis", "method.features=[8,16]", "method.norm_groups=4"],
            },
            "ablation-no-solver": {
                "preset": "tiny.yaml",
                "group": "ablation",
                "set": ["model.use_signal_fit=false"],
            },
        },
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_compare_trains_each_method_once_and_tabulates(tmp_path, comparison, monkeypatch):
    main(["compare", "--config", str(comparison), "--out", str(tmp_path / "work")])
    rows = list(csv.DictReader(open(tmp_path / "table.csv")))
    assert tuple(rows[0]) == COLUMNS
    assert [r["method"] for r in rows] == ["pinqi", "mantis", "ablation-no-solver", "cg-sense-fit"]
    by_name = {r["method"]: r for r in rows}
    assert int(by_name["pinqi"]["n_params"]) > 0 and int(by_name["cg-sense-fit"]["n_params"]) == 0
    assert by_name["mantis"]["training_samples"] == "6"  # the budget: 3 steps of 2
    # every row's errors, recomputed here from its own maps on the documented test set
    # (split "test", the comparison's seed and size)
    (cached,) = (tmp_path / "work").glob("test_*.h5")
    dataset = H5Dataset(cached)
    simulated = SimulatedDataset(ExperimentConfig.from_dict(TINY).data, "test", 3, seed=5)
    for i in range(3):
        torch.testing.assert_close(dataset[i]["params"], simulated[i]["params"])
    means = []
    for name in ("pinqi", "mantis", "ablation-no-solver"):
        checkpoint = tmp_path / "work" / name / "run" / "checkpoints" / "last.ckpt"
        errors = t1_nrmse_per_sample(network_method(checkpoint), dataset)
        check_row(by_name[name], errors)
        means.append(np.mean(errors))
    fit = SaturationRecovery(dataset.tau)
    errors = t1_nrmse_per_sample(lambda *inputs: cg_sense_fit(fit, *inputs), dataset)
    check_row(by_name["cg-sense-fit"], errors)
    means.append(np.mean(errors))
    assert len(set(np.round(means, 4))) == 4  # rows swapped between methods would show
    assert (tmp_path / "table.md").is_file() and (tmp_path / "table" / "fig5_methods.png").is_file()
    # restartable: a second run trains nothing
    import pinqi.training.run as run

    monkeypatch.setattr(run, "train", lambda *a, **k: pytest.fail("retrained a finished method"))
    main(["compare", "--config", str(comparison), "--out", str(tmp_path / "work")])
    # on another machine: the run folders are gone, the rows kept beside the table are not
    import shutil

    shutil.rmtree(tmp_path / "work")
    assert sorted(p.name for p in (tmp_path / "table" / "rows").glob("*.json")) == [
        "ablation-no-solver.json",
        "cg-sense-fit.json",
        "mantis.json",
        "pinqi.json",
    ]
    main(["compare", "--config", str(comparison), "--out", str(tmp_path / "work")])
    again = list(csv.DictReader(open(tmp_path / "table.csv")))
    assert [r["t1_nrmse_mean"] for r in again] == [r["t1_nrmse_mean"] for r in rows]


def test_table_only_trains_nothing(tmp_path, comparison, monkeypatch):
    import pinqi.training.run as run

    monkeypatch.setattr(run, "train", lambda *a, **k: pytest.fail("trained with --table-only"))
    main(["compare", "--config", str(comparison), "--out", str(tmp_path / "w"), "--table-only"])
    rows = list(csv.DictReader(open(tmp_path / "table.csv")))
    assert [r["method"] for r in rows] == ["cg-sense-fit"]  # only the reference so far


@pytest.mark.parametrize("name", ["cpu", "paper"])
def test_each_entry_differs_from_its_preset_only_where_it_says(name):
    comparison = Comparison.from_yaml(f"configs/compare/{name}.yaml")
    for entry in comparison.methods:
        config = comparison.experiment(entry).to_dict()
        base = Comparison(name="x", methods=(), budget=comparison.budget, common=comparison.common)
        plain = base.experiment(type(entry)(entry.name, entry.preset)).to_dict()
        changed = {
            f"{section}.{key}"
            for section in config
            if isinstance(config[section], dict)
            for key in config[section]
            if config[section][key] != plain[section][key]
        }
        listed = {item.partition("=")[0] for item in entry.overrides}
        assert changed <= listed, entry.name  # nothing changes that the entry does not name
        switches = changed - {"data.tau"}  # the ablations' delays are not a switch
        assert bool(switches) == (entry.name not in ("pinqi", "ablation-pinqi")), entry.name
    names = [e.name for e in comparison.methods]
    assert {"pinqi", "mantis", "deept1", "dopamine"} <= set(names)
    assert sum(e.group == "ablation" for e in comparison.methods) == 8


def test_comparison_file_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"methods": {"x": {"set": []}}}))
    with pytest.raises(ValueError, match="needs 'preset'"):
        Comparison.from_yaml(path)
    path.write_text(
        yaml.safe_dump({"methods": {"x": {"preset": "p.yaml"}}, "references": ["moba"]})
    )
    with pytest.raises(ValueError, match="unknown references"):
        Comparison.from_yaml(path)


def test_info_shows_any_method(capsys):
    main(["info", "--config", "configs/cpu.yaml", "--set", "method.name=mantis"])
    assert "MANTIS" in capsys.readouterr().out


def test_train_on_one_machine_evaluate_on_another(tmp_path, comparison):
    there = tmp_path / "gpu-machine"
    train_there = ["--only", "mantis", "--train-only", "--set", "optim.num_workers=0"]
    main(["compare", "--config", str(comparison), "--out", str(there), *train_there])
    assert not (tmp_path / "table.csv").exists()  # nothing evaluated there
    last = there / "mantis" / "run" / "checkpoints" / "last.ckpt"
    clock = training_clock(last)
    assert clock["devices"] == [f"CPU ({torch.get_num_threads()} threads)"]
    # copied here (another absolute path): resumed without training, then evaluated
    here = tmp_path / "here"
    there.rename(here)
    last = here / "mantis" / "run" / "checkpoints" / "last.ckpt"
    steps = torch.load(last, weights_only=False)["global_step"]
    main(["compare", "--config", str(comparison), "--out", str(here), "--only", "mantis"])
    assert torch.load(last, weights_only=False)["global_step"] == steps
    assert training_clock(last) == clock  # evaluating added no training time
    rows = {r["method"]: r for r in csv.DictReader(open(tmp_path / "table.csv"))}
    assert rows["mantis"]["trained_on"] == clock["devices"][0]
    assert float(rows["mantis"]["train_minutes"]) == pytest.approx(clock["seconds"] / 60)
    (cached,) = here.glob("test_*.h5")
    check_row(rows["mantis"], t1_nrmse_per_sample(network_method(last), H5Dataset(cached)))


def test_placement_overrides_cannot_change_a_method(tmp_path, comparison):
    with pytest.raises(SystemExit, match="may only change where its methods train"):
        args = ["--train-only", "--set", "model.iterations=1"]
        main(["compare", "--config", str(comparison), "--out", str(tmp_path / "w"), *args])
