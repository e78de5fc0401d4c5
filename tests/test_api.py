"""One documented call from arrays to maps (issue 11, part 5)."""

import warnings

import numpy as np
import pytest
import torch

from pinqi.api import reconstruct_maps
from pinqi.data.datasets import SimulatedDataset
from pinqi.data.simulation import SimulationConfig


@pytest.fixture(scope="module")
def batch():
    config = SimulationConfig(size=32, noise_sigma=(0.005, 0.005))
    samples = [SimulatedDataset(config, "test", 2, seed=4)[i] for i in range(2)]
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0] if k != "tau"} | {
        "tau": samples[0]["tau"]
    }


def test_arrays_to_maps_with_the_shipped_model(batch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maps = reconstruct_maps(batch["kspace"], batch["coil_maps"], batch["mask"], batch["tau"])
    assert maps["t1"].shape == (2, 32, 32) and maps["m0"].is_complex()
    torch.testing.assert_close(maps["t1"], 1 / maps["params"][:, -1].clamp(min=0.1))
    assert maps["residual_ratio"].shape == (2,) and maps["residual"].shape == (2, 32, 32)
    brain = batch["brain_mask"]
    truth = 1 / batch["params"][:, -1]
    assert float((maps["t1"] - truth).abs()[brain].median()) < 0.5


def test_other_protocol_is_refused_with_the_cli_message(batch):
    with pytest.raises(ValueError, match=r"trained for saturation at .* --allow-other-protocol"):
        reconstruct_maps(
            batch["kspace"], batch["coil_maps"], batch["mask"], [0.4, 1, 1.5, 2, 8], check=False
        )
    with pytest.raises(ValueError, match="has 4 delays but the model was trained for 5"):
        reconstruct_maps(
            batch["kspace"][:, :4], batch["coil_maps"], batch["mask"][:, :4], [0.5, 1, 1.5, 2]
        )


def test_image_series_arrays_to_maps():
    from pinqi.api import fit_maps

    t1 = np.geomspace(0.2, 4.0, 60).reshape(6, 10)
    ti = np.array([0.05, 0.15, 0.3, 0.5, 0.8, 1.2, 1.8, 2.6, 4.0])
    magnitude = np.abs(500 * (1 - 1.9 * np.exp(-ti / t1[..., None])))  # (x, y, n_ti)
    images = np.moveaxis(magnitude, -1, 0)[::-1]  # delays in reverse order: sorted by tau
    maps = fit_maps(images, ti[::-1].tolist(), model="inversion")
    np.testing.assert_allclose(maps["t1"], t1, rtol=1e-3)
    np.testing.assert_allclose(maps["m0"], 500, rtol=1e-3)
    assert maps["mask"].all() and maps["t1"].shape == (6, 10)
    with pytest.raises(ValueError, match="holds 9 delays but --tau gives 3"):
        fit_maps(images, [1, 2, 3])
    with pytest.raises(ValueError, match="NaN or Inf"):
        fit_maps(np.full((9, 6, 10), np.nan), ti)
    with pytest.raises(ValueError, match=r"expected \(n_tau, x, y\)"):
        fit_maps(np.ones((9, 6)), ti)
