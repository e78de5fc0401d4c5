"""The training side of the CLI where users meet it: train --resume PATH, export without
calibration, data of another signal model, evaluate --allow-other-protocol."""

import csv
import json
import warnings

import numpy as np
import pytest
import torch
import yaml

from pinqi.cli import main
from pinqi.config import ExperimentConfig
from pinqi.data.datasets import SimulatedDataset, write_h5
from pinqi.data.simulation import SimulationConfig
from pinqi.evaluation.consistency import RESIDUAL_RATIO_LIMIT, residual_ratio_limit
from pinqi.training.checkpoints import load_model

from conftest import nrmse
from test_training import TINY


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``pinqi train`` of the TINY preset for 4 steps (2 pretraining, 2 end to end)."""
    root = tmp_path_factory.mktemp("cli-train")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(["train", "--config", str(root / "tiny.yaml"), "--out", str(root / "run"),
              "--max-steps", "4"])  # fmt: skip
    return root


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_train_resume_from_a_given_checkpoint_continues_that_run(run):
    middle = run / "run" / "checkpoints" / "epoch=0-step=2.ckpt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(["train", "--config", str(run / "tiny.yaml"), "--out", str(run / "again"),
              "--max-steps", "4", "--resume", str(middle)])  # fmt: skip
    resumed = torch.load(run / "again" / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == 4
    with open(run / "again" / "logs" / "metrics.csv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("train_loss")]
    assert steps == [2, 3]  # steps 0-1 came from the checkpoint
    # the end-to-end steps are deterministic: the same weights as the uninterrupted run,
    # which moved on from that checkpoint
    uninterrupted = weights(run / "run" / "checkpoints" / "last.ckpt")
    for name, value in resumed["state_dict"].items():
        torch.testing.assert_close(value, uninterrupted[name], rtol=1e-6, atol=1e-7)
    before = weights(middle)
    assert max(float((before[k] - v).abs().max()) for k, v in uninterrupted.items()) > 1e-4


def test_train_resume_from_a_missing_checkpoint_is_one_line(run, tmp_path):
    with pytest.raises(SystemExit, match=r"^pinqi train: .*none\.ckpt"):
        main(["train", "--config", str(run / "tiny.yaml"), "--out", str(tmp_path / "x"),
              "--resume", str(tmp_path / "none.ckpt")])  # fmt: skip


def test_export_without_calibration_keeps_the_fixed_limit(run, tmp_path, capsys):
    last = run / "run" / "checkpoints" / "last.ckpt"
    out = tmp_path / "model.pt"
    main(["export", "--checkpoint", str(last), "--out", str(out), "--calibration-samples", "0"])
    printed = capsys.readouterr().out
    assert "calibrating" not in printed and f"wrote {out}" in printed
    exported = torch.load(out, weights_only=False)
    assert "residual_check" not in exported["card"]
    card = json.loads(out.with_suffix(".json").read_text())
    assert card == json.loads(json.dumps(exported["card"])) and "residual_check" not in card
    assert residual_ratio_limit(out) == RESIDUAL_RATIO_LIMIT
    model, _ = load_model(last)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(exported["state_dict"][name], value, rtol=0, atol=0)


def test_data_of_another_signal_model_are_refused(run, tmp_path):
    config = ExperimentConfig.from_dict(TINY).data
    other = SimulationConfig(**{**config.__dict__, "signal_model": "inversion"})
    data = write_h5(tmp_path / "ir.h5", SimulatedDataset(other, "test", 1), progress=False)
    checkpoint = run / "run" / "checkpoints" / "last.ckpt"
    for command in ("evaluate", "reconstruct"):
        out = tmp_path / command
        with pytest.raises(
            SystemExit,
            match=rf"^pinqi {command}: .* holds inversion data at delays .* but the model was "
            r"trained for saturation at .*data\.signal_model=inversion.*--allow-other-protocol",
        ):
            main([command, "--checkpoint", str(checkpoint), "--data", str(data),
                  "--out", str(out), "--device", "cpu"])  # fmt: skip
        assert not out.exists()


def test_evaluate_allow_other_protocol_uses_the_datas_delays(run, tmp_path):
    """Other delays, evaluated anyway: the rows are those of the data's delays."""
    config = ExperimentConfig.from_dict(TINY).data
    tau = tuple(2 * t for t in config.tau)
    other = SimulationConfig(
        **{**config.__dict__, "tau": tau, "acceleration": 1.0, "noise_sigma": (0.0, 0.0)}
    )
    dataset = SimulatedDataset(other, "test", 2, seed=3)
    data = write_h5(tmp_path / "other.h5", dataset, progress=False)
    argv = ["evaluate", "--checkpoint", str(run / "run" / "checkpoints" / "last.ckpt"),
            "--data", str(data), "--device", "cpu"]  # fmt: skip
    with pytest.raises(SystemExit, match="--allow-other-protocol"):
        main([*argv, "--out", str(tmp_path / "refused")])
    assert not (tmp_path / "refused").exists()
    with pytest.warns(UserWarning, match=r"going on as asked, with the data's delays"):
        main([*argv, "--out", str(tmp_path / "ev"), "--allow-other-protocol"])
    rows = list(csv.DictReader(open(tmp_path / "ev" / "metrics.csv")))
    baseline = [r for r in rows if r["method"] == "CG-SENSE + fit"]
    assert len(baseline) == 2 and {r["method"] for r in rows} == {"PINQI", "CG-SENSE + fit"}
    for row in baseline:
        # fully sampled, noise-free: the fit at the data's delays is exact; at the model's
        # (half as long) delays T1 would come out halved, nRMSE 0.5
        sample = dataset[int(row["sample"])]
        truth = 1 / sample["params"][-1]
        assert float(row["t1_nrmse"]) < 0.01
        assert nrmse(truth / 2, truth, sample["brain_mask"]) > 0.01
    assert np.isfinite([float(r["t1_nrmse"]) for r in rows]).all()
