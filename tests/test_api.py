"""One documented call from arrays to maps (issue 11, part 5)."""

import warnings

import numpy as np
import pytest
import torch

from pinqi.api import reconstruct_maps
from pinqi.data.datasets import SimulatedDataset
from pinqi.data.simulation import SimulationConfig

from conftest import assert_accurate


@pytest.fixture(scope="module")
def batch():
    # the shipped model's own setting (96x96, 8 coils, 8x): at 32x32 it is no better than a
    # constant map
    config = SimulationConfig(size=96, noise_sigma=(0.005, 0.005))
    samples = [SimulatedDataset(config, "test", 2, seed=4)[i] for i in range(2)]
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0] if k != "tau"} | {
        "tau": samples[0]["tau"]
    }


def test_arrays_to_maps_with_the_shipped_model(batch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maps = reconstruct_maps(batch["kspace"], batch["coil_maps"], batch["mask"], batch["tau"])
    assert maps["t1"].shape == (2, 96, 96) and maps["m0"].is_complex()
    torch.testing.assert_close(maps["t1"], 1 / maps["params"][:, -1].clamp(min=0.1))
    assert maps["residual_ratio"].shape == (2,) and maps["residual"].shape == (2, 96, 96)
    brain = batch["brain_mask"]
    truth = 1 / batch["params"][:, -1]
    # T1 nRMSE ~0.18 (the model's validation error), |M0| ~0.06; a constant, transposed,
    # flipped or rescaled map fails the same tolerance
    assert_accurate(maps["t1"], truth, brain, 0.23)
    true_m0 = torch.complex(batch["params"][:, 0], batch["params"][:, 1])
    assert_accurate(maps["m0"].abs(), true_m0.abs(), brain, 0.1)


def test_other_protocol_is_refused_with_the_cli_message(batch):
    with pytest.raises(ValueError, match=r"trained for saturation at .* --allow-other-protocol"):
        reconstruct_maps(
            batch["kspace"], batch["coil_maps"], batch["mask"], [0.4, 1, 1.5, 2, 8], check=False
        )
    with pytest.raises(ValueError, match=r"at 4 delays .* trained for saturation at 5"):
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
    messages = []
    for bad, delays, match in [
        (images, [1, 2, 3], "holds 9 images but 3 delays were given"),
        (np.full((9, 6, 10), np.nan), ti, r"zero \(or NaN\) everywhere"),
        (np.full((9, 6, 10), np.inf), ti, "infinite values"),
        (np.ones((9, 6)), ti, r"expected \(n_tau, x, y\)"),
    ]:
        with pytest.raises(ValueError, match=match) as error:
            fit_maps(bad, delays)
        messages.append(str(error.value))
    nan = images.copy()
    nan[:, 2, 3] = np.nan
    with pytest.raises(
        ValueError, match=r"1 voxel\(s\) inside the mask are NaN.*\(2, 3\)"
    ) as error:
        fit_maps(nan, ti, model="inversion", mask=np.ones((6, 10), bool))
    messages.append(str(error.value))
    assert not any("--" in m for m in messages)  # Python users get no command-line flags
    assert fit_maps(nan, ti, model="inversion")["mask"].sum() == 59


def test_fit_maps_fits_only_the_given_mask():
    from pinqi.api import fit_maps

    t1 = np.geomspace(0.3, 3.0, 30).reshape(5, 6)
    tau = [0.5, 1.0, 1.5, 2.0, 8.0]
    images = np.stack([200 * (1 - np.exp(-t / t1)) for t in tau])
    mask = np.zeros((5, 6), dtype=bool)
    mask[1:4, 2:5] = True
    maps = fit_maps(images, tau, mask=mask)
    np.testing.assert_array_equal(maps["mask"], mask)
    np.testing.assert_allclose(maps["t1"][mask], t1[mask], rtol=1e-3)
    np.testing.assert_allclose(maps["m0"][mask], 200, rtol=1e-3)
    assert (maps["t1"][~mask] == 0).all() and (maps["m0"][~mask] == 0).all()
    with pytest.raises(ValueError, match=r"mask has shape \(6, 5\) but the series' grid is"):
        fit_maps(images, tau, mask=mask.T)


def test_fit_maps_look_locker_corrects_the_apparent_t1():
    from pinqi.api import fit_maps

    t1 = np.geomspace(0.4, 2.5, 12).reshape(3, 4)
    a, b = 500.0, -900.0
    t1_star = t1 / (-b / a - 1)  # T1* < T1: the readouts shorten the apparent recovery
    ti = np.array([0.1, 0.18, 0.26, 1.1, 1.18, 2.1, 2.18, 3.1, 4.1])
    images = np.moveaxis(np.abs(a + b * np.exp(-ti / t1_star[..., None])), -1, 0)
    maps = fit_maps(images, ti, model="look-locker")
    np.testing.assert_allclose(maps["t1_star"], t1_star, rtol=1e-3)
    np.testing.assert_allclose(maps["t1"], t1, rtol=1e-3)
    np.testing.assert_allclose(maps["m0"], a, rtol=1e-3)
    # the uncorrected T1* (a factor 0.8 off) fails the same check
    assert np.abs(maps["t1_star"] / t1 - 1).min() > 1e-3


def test_numpy_arrays_give_the_maps_of_tensors_and_empty_slices_are_refused(batch):
    inputs = [batch[k][:1] for k in ("kspace", "coil_maps", "mask")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from_numpy = reconstruct_maps(*(x.numpy() for x in inputs), batch["tau"], check=False)
        from_tensors = reconstruct_maps(*inputs, batch["tau"], check=False)
    torch.testing.assert_close(from_numpy["t1"], from_tensors["t1"], rtol=0, atol=0)
    empty = torch.cat([inputs[0], torch.zeros_like(inputs[0])])
    two = [empty, *(x.expand(2, *x.shape[1:]) for x in inputs[1:])]
    with pytest.raises(ValueError, match=r"kspace is zero everywhere in slice\(s\) \[1\]"):
        reconstruct_maps(*two, batch["tau"])
