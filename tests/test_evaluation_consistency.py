"""The data-residual check of PINQI's maps against the plain fit (issue 9, part 6)."""

import warnings

import pytest
import torch

from pinqi.data.datasets import SimulatedDataset
from pinqi.data.simulation import SimulationConfig
from pinqi.evaluation.consistency import (
    OutOfDistributionWarning,
    check_consistency,
    estimate_noise_sigma,
    excess_residual_map,
    kspace_residual,
    t1_disagreement,
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
        OutOfDistributionWarning, match=r"at 2 of 3 slices \(0, 2; residual ratio up to 4\.00"
    ) as caught:
        bad = warn_if_inconsistent(torch.tensor([4.0, 1.1, 2.0]))
    assert bad == [0, 2]
    assert "\n" not in str(caught[0].message) and "limit is 1.50" in str(caught[0].message)
    # one limit per slice (per noise level): the second slice is under its own limit
    with pytest.warns(OutOfDistributionWarning, match=r"at 1 of 2 slices \(0;"):
        assert warn_if_inconsistent(torch.tensor([1.3, 1.3]), torch.tensor([1.2, 1.4])) == [0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_inconsistent(torch.tensor([1.0, 1.2])) == []


@pytest.mark.parametrize("sigma", [0.001, 0.02])
def test_noise_estimate_of_pure_noise(sigma):
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(2, 5, 4, 64, 64, dtype=torch.complex64, generator=g) * 2**0.5 * sigma
    mask = (torch.rand(2, 5, 1, 64, generator=g) < 0.3).float()
    estimate = estimate_noise_sigma(noise * mask.unsqueeze(2), mask)
    torch.testing.assert_close(estimate, torch.full((2,), sigma), rtol=0.05, atol=0)


def test_noise_estimate_of_simulated_data():
    """Close where the noise dominates the corners; an upper bound at high SNR."""
    for sigma, tolerance in ((0.1, 0.15), (0.001, None)):  # 32 x 32: much signal in corners
        data = batch(sigma)
        estimate = estimate_noise_sigma(data["kspace"], data["mask"])
        assert bool((estimate >= 0.9 * sigma).all())
        if tolerance is not None:
            torch.testing.assert_close(estimate, torch.full((2,), sigma), rtol=tolerance, atol=0)


def test_excess_map_is_zero_for_equal_residuals_and_one_for_twice_the_power():
    fit = torch.rand(2, 16, 16) + 0.5
    torch.testing.assert_close(excess_residual_map(fit, fit), torch.zeros(2, 16, 16))
    doubled = excess_residual_map(fit * 2**0.5, fit)
    torch.testing.assert_close(doubled, torch.ones(2, 16, 16))


def _maps_with_noise(seed: int, t1_factor: float = 1.0, size: int = 48) -> tuple:
    """Smooth truth, a noisy "fit" of it and a "PINQI" map with T1 scaled by ``t1_factor``."""
    g = torch.Generator().manual_seed(seed)
    model = SaturationRecovery(torch.tensor([0.5, 1.0, 1.5, 2.0, 8.0]))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    inside = (xx**2 + yy**2 < 0.8).float()
    t1 = 0.8 + 1.5 * (xx + 1) / 2
    truth = torch.stack([inside, 0 * inside, 1 / t1])[None]
    fit = truth.clone()
    fit[:, 2] = fit[:, 2] * torch.exp(0.3 * torch.randn(size, size, generator=g))  # noisy R1
    pinqi = truth.clone()
    pinqi[:, 2] = pinqi[:, 2] / t1_factor
    return model, pinqi, fit, inside


def test_t1_disagreement_averages_out_the_fits_noise_and_keeps_a_bias():
    model, pinqi, fit, _ = _maps_with_noise(0)
    same = float(t1_disagreement(model, pinqi, fit))
    without_smoothing = float(t1_disagreement(model, pinqi, fit, window=1))
    assert same < 0.1 < 0.2 < without_smoothing  # noise of 0.3 in ln R1, mostly averaged out
    model, biased, fit, _ = _maps_with_noise(0, t1_factor=1.5)
    assert float(t1_disagreement(model, biased, fit)) == pytest.approx(0.405, abs=0.05)  # ln 1.5
    assert float(t1_disagreement(model, fit, fit)) == 0.0


def test_t1_disagreement_ignores_pixels_without_signal():
    model, pinqi, fit, inside = _maps_with_noise(1)
    reference = t1_disagreement(model, pinqi, fit)
    garbage = fit.clone()
    garbage[:, 2] = torch.where(inside > 0, fit[:, 2], torch.full_like(fit[:, 2], 19.0))
    torch.testing.assert_close(t1_disagreement(model, pinqi, garbage), reference)


def test_warning_names_the_t1_disagreement():
    ratio = torch.tensor([1.0, 1.0])
    with pytest.warns(OutOfDistributionWarning, match=r"at 1 of 2 slices \(1; T1 50 % apart"):
        flagged = warn_if_inconsistent(
            ratio, 1.5, "slice", torch.tensor([0.1, 0.405465]), torch.tensor([0.2, 0.2])
        )
    assert flagged == [1]
