"""The wrong signal model or delay order is caught before a fit (issue 19, part 3)."""

import numpy as np
import pytest

from pinqi.cli import main
from pinqi.evaluation.signal_check import bound_share_problem, signal_model_problems

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
