import math

import pytest
import torch

from pinqi.physics import birdcage_maps, variable_density_mask


def test_birdcage_normalized_and_shaped(generator):
    maps = birdcage_maps(8, (32, 24), batch_size=3, generator=generator)
    assert maps.shape == (3, 8, 32, 24)
    assert maps.dtype == torch.complex64
    torch.testing.assert_close((maps.abs() ** 2).sum(1), torch.ones(3, 32, 24))


def test_birdcage_coils_differ_and_vary_smoothly():
    maps = birdcage_maps(8, (32, 32), rotation=0.0)[0]
    # each coil is most sensitive near its own position: the maxima are at different pixels
    peaks = {int(m.abs().argmax()) for m in maps}
    assert len(peaks) == 8
    # neighbouring pixels inside the inscribed circle differ little (smooth profiles)
    yy, xx = torch.meshgrid(torch.arange(32) - 15.5, torch.arange(32) - 15.5, indexing="ij")
    inside = (yy**2 + xx**2 < 16**2)[1:] & (yy**2 + xx**2 < 16**2)[:-1]
    assert float((maps[:, 1:] - maps[:, :-1]).abs()[:, inside].max()) < 0.2


def test_birdcage_seeded_and_rotated():
    a = birdcage_maps(4, (16, 16), generator=torch.Generator().manual_seed(3))
    b = birdcage_maps(4, (16, 16), generator=torch.Generator().manual_seed(3))
    c = birdcage_maps(4, (16, 16), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    # a quarter turn of a 4-coil array permutes the coils' magnitudes and rotates the image
    r0 = birdcage_maps(4, (16, 16), rotation=0.0)[0].abs()
    r90 = birdcage_maps(4, (16, 16), rotation=math.pi / 2)[0].abs()
    torch.testing.assert_close(r90[0], r0[1], atol=1e-5, rtol=0)


def test_birdcage_per_sample_rotation():
    maps = birdcage_maps(4, (8, 8), rotation=torch.tensor([0.0, math.pi / 2]))
    torch.testing.assert_close(maps[1, 0].abs(), maps[0, 1].abs(), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0, (8, 8)), {"rotation": 0.0}, "n_coils"),
        ((4, (8,)), {"rotation": 0.0}, "shape"),
        ((4, (8, 8)), {"radius": 1.2, "rotation": 0.0}, "radius"),
        ((4, (8, 8)), {}, "generator"),
        ((4, (8, 8)), {"rotation": float("nan")}, "finite"),
    ],
)
def test_birdcage_bad_input(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        birdcage_maps(*args, **kwargs)


@pytest.mark.parametrize("acceleration", [2, 4, 8])
def test_mask_acceleration_and_centre(acceleration, generator):
    mask = variable_density_mask(3, 5, 192, acceleration=acceleration, generator=generator)
    assert mask.shape == (3, 5, 1, 192)
    assert mask.dtype == torch.bool
    lines = mask.sum(-1)
    assert torch.all(lines == round(192 / acceleration))
    n_center = max(2, round(192 / acceleration) // 3)
    centre = mask[..., 96 - n_center // 2 : 96 - n_center // 2 + n_center]
    assert torch.all(centre)


def test_mask_random_per_frame_and_sample(generator):
    mask = variable_density_mask(4, 5, 96, generator=generator)[:, :, 0]
    rows = mask.reshape(20, 96)
    assert len({tuple(r.tolist()) for r in rows}) == 20


def test_mask_density_favours_centre(generator):
    mask = variable_density_mask(200, 5, 96, n_center=0, generator=generator)
    frequency = mask.float().mean((0, 1, 2))
    assert frequency[40:56].mean() > 2 * frequency[:16].mean()


def test_mask_seeded(generator):
    a = variable_density_mask(2, 3, 64, generator=torch.Generator().manual_seed(9))
    b = variable_density_mask(2, 3, 64, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"acceleration": 0.5}, r"acceleration must be >= 1, got 0\.5"),
        ({"acceleration": float("nan")}, r"acceleration must be >= 1, got nan"),
        ({"n_center": 100}, r"n_center must be an integer in \[0, 32\] \(the 32 lines that "),
        ({"n_center": -1}, r"n_center must be an integer in \[0, 32\] .*got -1"),
        ({"n_center": 4.0}, r"n_center must be an integer .*got 4\.0"),
    ],
)
def test_mask_bad_input(kwargs, message, generator):
    with pytest.raises(ValueError, match=message):
        variable_density_mask(1, 1, 64, generator=generator, **{"acceleration": 2.0} | kwargs)


@pytest.mark.parametrize("name", ["batch_size", "n_tau", "n_phase"])
def test_mask_sizes_must_be_positive_integers(name, generator):
    sizes = {"batch_size": 1, "n_tau": 1, "n_phase": 64} | {name: 0}
    with pytest.raises(ValueError, match=rf"{name} must be a positive integer, got 0"):
        variable_density_mask(**sizes, generator=generator)
