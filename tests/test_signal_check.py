"""The wrong signal model or delay order is caught before a fit (issue 19, part 3)."""

import json

import h5py
import numpy as np
import pytest
import torch

from pinqi.cli import main
from pinqi.data.datasets import H5Dataset, SimulatedDataset
from pinqi.data.simulation import SimulationConfig
from pinqi.evaluation.evaluate import warn_about_signal
from pinqi.evaluation.signal_check import (
    SignalModelWarning,
    bound_share_problem,
    kspace_signal_problems,
    signal_model_problems,
)

from test_fit_series import TAU_SR, TI, inversion_magnitude, saturation_series, save, t1_grid

T1 = t1_grid((6, 5), 0.4, 2.5)


def voxels(images):
    return np.moveaxis(images, -1, 0).reshape(images.shape[-1], -1)


def test_a_matching_series_has_no_problems():
    assert (
        signal_model_problems(np.array(TAU_SR), voxels(saturation_series(T1)), "saturation") == []
    )
    ir = voxels(inversion_magnitude(T1))
    assert signal_model_problems(np.array(TI), ir, "inversion") == []


def test_an_inversion_series_is_not_fitted_silently_as_saturation():
    problems = signal_model_problems(np.array(TI), voxels(inversion_magnitude(T1)), "saturation")
    assert len(problems) == 1 and "inversion or inversion-ab" in problems[0]
    assert "null near" in problems[0]


def test_reversed_delays_are_named():
    reversed_tau = np.array(TAU_SR[::-1])  # images ascending, delays given descending
    problems = signal_model_problems(reversed_tau, voxels(saturation_series(T1)), "saturation")
    assert any("not in ascending order" in p for p in problems)
    # delays ascending but images in reverse order: the signal falls with the delay
    backwards = voxels(saturation_series(T1))[::-1]
    problems = signal_model_problems(np.array(TAU_SR), backwards, "saturation")
    assert problems == [problems[0]] and "reversed order" in problems[0]


def test_a_saturation_series_fitted_as_inversion_is_named():
    problems = signal_model_problems(np.array(TAU_SR), voxels(saturation_series(T1)), "inversion")
    assert len(problems) == 1 and "use the model saturation" in problems[0]
    assert "no inversion null" in problems[0]


def test_bound_share_is_a_problem_above_a_few_percent():
    assert bound_share_problem(np.zeros(100, dtype=bool)) is None
    assert bound_share_problem(np.arange(100) < 2) is None
    assert "10 % of the voxels" in bound_share_problem(np.arange(100) < 10)


def test_cli_fit_warns_for_an_inversion_series_with_the_saturation_model(tmp_path, capsys):
    path = save(tmp_path / "ir.nii.gz", inversion_magnitude(T1))
    delays = ",".join(map(str, TI))
    main(["fit", "--images", str(path), "--tau", delays, "--out", str(tmp_path / "sr")])
    err = capsys.readouterr().err
    assert "warning: the signal dips to a null" in err and "inversion" in err
    assert "Traceback" not in err and ".py" not in err  # one line, no source path
    main(
        [
            "fit",
            "--images",
            str(path),
            "--tau",
            delays,
            "--model",
            "inversion",
            "--out",
            str(tmp_path / "ir"),
        ]
    )
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("delays", ["8,2,1.5,1,0.5"])
def test_cli_fit_names_delays_in_reversed_order(tmp_path, capsys, delays):
    path = save(tmp_path / "sr.nii.gz", saturation_series(T1))
    main(["fit", "--images", str(path), "--tau", delays, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    # pinqi's reader orders the images by their delays: the signal then falls with the delay
    assert "not in ascending order" in err or "reversed order" in err


def kspace_batch(signal_model, tau, n=2):
    config = SimulationConfig(size=32, tau=tau, signal_model=signal_model, n_coils=4)
    dataset = SimulatedDataset(config, "val", n, seed=5)
    samples = [dataset[i] for i in range(n)]
    return [torch.stack([s[k] for s in samples]) for k in ("kspace", "coil_maps", "mask")]


def test_kspace_of_an_inversion_series_is_caught_before_a_saturation_reconstruction():
    ti = (0.1, 0.3, 0.6, 1.2, 3.0)
    inputs = kspace_batch("inversion", ti)
    problems = kspace_signal_problems(*inputs, torch.tensor(ti), "saturation")
    assert len(problems) == 1 and "null near" in problems[0]
    assert kspace_signal_problems(*inputs, torch.tensor(ti), "inversion") == []


def test_kspace_with_the_delays_reversed_is_caught():
    tau = (0.5, 1.0, 1.5, 2.0, 8.0)
    kspace, coil_maps, mask = kspace_batch("saturation", tau)
    assert kspace_signal_problems(kspace, coil_maps, mask, torch.tensor(tau), "saturation") == []
    flipped = kspace_signal_problems(
        kspace.flip(1), coil_maps, mask.flip(1), torch.tensor(tau), "saturation"
    )
    assert len(flipped) == 1 and "reversed order" in flipped[0]


def test_reconstruct_and_fit_warn_about_an_inversion_file_recorded_as_saturation(tmp_path):
    ti = "0.1,0.3,0.6,1.2,3"
    main(["simulate", "--out", str(tmp_path / "ir.h5"), "--n-samples", "1", "--size", "32",
          "--seed", "1", "--quiet", "--set", f"tau=[{ti}]", "--set",
          "signal_model=inversion"])  # fmt: skip
    with h5py.File(tmp_path / "ir.h5", "a") as f:  # a user's file with the wrong model
        config = json.loads(f.attrs["config"])
        f.attrs["config"] = json.dumps({**config, "signal_model": "saturation"})
    with pytest.warns(SignalModelWarning, match="ir.h5: the signal dips to a null"):
        main(["fit", "--data", str(tmp_path / "ir.h5"), "--out", str(tmp_path / "fit")])
    with pytest.warns(SignalModelWarning, match="null near"):
        warn_about_signal(H5Dataset(tmp_path / "ir.h5"))
