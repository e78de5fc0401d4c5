"""The data-residual check of PINQI's maps against the plain fit (issue 9, part 6)."""

import warnings

import pytest
import torch

from pinqi.data.datasets import SimulatedDataset
from pinqi.data.simulation import SimulationConfig
from pinqi.evaluation.consistency import (
    OutOfDistributionWarning,
    check_consistency,
    kspace_residual,
    warn_if_inconsistent,
)
from pinqi.physics import CartesianAcquisition, SaturationRecovery


def batch(sigma):
    config = SimulationConfig(size=32, noise_sigma=(sigma, sigma))
    samples = [SimulatedDataset(config, "val", 2, seed=3)[i] for i in range(2)]
    return {
        k: torch.stack([s[k] for s in samples])
        for k in ("kspace", "coil_maps", "mask", "params", "tau")
    }


def test_true_maps_explain_noiseless_data_exactly():
    data = batch(0.0)
    model = SaturationRecovery(data["tau"][0])
    acquisition = CartesianAcquisition(data["coil_maps"], data["mask"])
    residual = kspace_residual(model, data["params"], acquisition, data["kspace"])
    assert float(residual.max()) < 1e-5
    wrong = data["params"].clone()
    wrong[:, 2] *= 0.4  # T1 2.5 times too long
    assert float(kspace_residual(model, wrong, acquisition, data["kspace"]).min()) > 0.05


def test_wrong_maps_explain_the_data_worse_than_the_fit():
    data = batch(0.01)
    model = SaturationRecovery(data["tau"][0])
    inputs = (data["kspace"], data["coil_maps"], data["mask"])
    good = check_consistency(model, data["params"], *inputs)
    wrong = data["params"].clone()
    wrong[:, 2] *= 0.4
    bad = check_consistency(model, wrong, *inputs)
    torch.testing.assert_close(good.baseline, bad.baseline)
    good_ratio = good.kspace_residual["PINQI"] / good.kspace_residual["CG-SENSE + fit"]
    bad_ratio = bad.kspace_residual["PINQI"] / bad.kspace_residual["CG-SENSE + fit"]
    assert float(good_ratio.max()) < 1.5 < float(bad_ratio.min())
    assert bad.residual_maps["PINQI"].shape == (2, 32, 32)
    assert float(bad.residual_maps["PINQI"].mean()) > 2 * float(good.residual_maps["PINQI"].mean())


def test_warning_names_the_slices():
    with pytest.warns(
        OutOfDistributionWarning, match=r"at 2 of 3 slice\(s\) \[0, 2\].*up to 4\.00"
    ):
        bad = warn_if_inconsistent(torch.tensor([4.0, 1.1, 2.0]))
    assert bad == [0, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_inconsistent(torch.tensor([1.0, 1.2])) == []
