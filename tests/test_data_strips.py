"""Readout strips are exact sub-problems of the full acquisition."""

from dataclasses import replace

import pytest
import torch

from pinqi.data.datasets import SimulatedDataset
from pinqi.data.simulation import SimulationConfig
from pinqi.data.strips import readout_strip, strip_start
from pinqi.physics import CartesianAcquisition, SaturationRecovery

NOISELESS = SimulationConfig(size=32, noise_sigma=(0.0, 0.0))


def test_strip_kspace_is_the_strip_acquisition_of_the_strip_images():
    sample = SimulatedDataset(NOISELESS, "val", 1, seed=1)[0]
    strip = readout_strip(sample, 8, 16)
    assert strip["kspace"].shape == (5, 8, 16, 32) and strip["params"].shape == (3, 16, 32)
    images = SaturationRecovery(sample["tau"])(strip["params"][None])
    acquisition = CartesianAcquisition(strip["coil_maps"][None], strip["mask"][None])
    expected = acquisition.forward(images)[0]
    scale = float(expected.abs().max())
    torch.testing.assert_close(strip["kspace"], expected, atol=1e-5 * scale, rtol=0)
    # the comparison can tell: the full k-space cropped in k is not the strip's data
    cropped = sample["kspace"][..., 8:24, :]
    assert float((cropped - expected).abs().max()) > 0.1 * scale


def test_strip_keeps_the_noise_level():
    config = replace(NOISELESS, noise_sigma=(0.05, 0.05), size=64)
    sample = SimulatedDataset(config, "val", 1, seed=2)[0]
    clean = SimulatedDataset(replace(config, noise_sigma=(0.0, 0.0)), "val", 1, seed=2)[0]
    strip, clean_strip = readout_strip(sample, 0, 32), readout_strip(clean, 0, 32)
    noise = (strip["kspace"] - clean_strip["kspace"])[
        strip["mask"].unsqueeze(1).expand_as(strip["kspace"])
    ]
    std = float(noise.real.std())
    assert 0.045 < std < 0.055


def test_training_strips_hold_the_brain():
    dataset = SimulatedDataset(SimulationConfig(size=48), "train", 4, seed=0, strip_rows=16)
    for i in range(4):
        sample = dataset[i]
        assert sample["kspace"].shape[-2:] == (16, 48)
        assert bool(sample["brain_mask"].any())


def test_strip_start_stays_inside():
    mask = torch.zeros(32, 8, dtype=torch.bool)
    mask[30] = True
    gen = torch.Generator().manual_seed(0)
    assert strip_start(mask, 8, gen) == 24


def test_bad_strips_are_named():
    sample = SimulatedDataset(NOISELESS, "val", 1)[0]
    with pytest.raises(ValueError, match="do not fit"):
        readout_strip(sample, 20, 16)
    with pytest.raises(ValueError, match="strip_rows must be in"):
        SimulatedDataset(NOISELESS, "train", 1, strip_rows=64)
