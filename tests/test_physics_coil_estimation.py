import pytest
import torch

from pinqi.data.datasets import SimulatedDataset
from pinqi.data.simulation import SimulationConfig
from pinqi.physics import (
    birdcage_maps,
    calibration_images,
    fft2c,
    ratio_maps,
    variable_density_mask,
    walsh_maps,
)


def relative_phase(maps: torch.Tensor) -> torch.Tensor:
    """Maps with the phase of coil 0 removed (estimates are defined up to a phase per pixel)."""
    return maps * torch.exp(-1j * maps[:, :1].angle())


def object_and_coils(size=64, seed=0):
    coils = birdcage_maps(
        8, (size, size), batch_size=2, generator=torch.Generator().manual_seed(seed)
    )
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    inside = x**2 + y**2 < 0.8
    image = inside * (1 + 0.3 * torch.sin(5 * x)) * torch.exp(1j * 0.5 * y)
    return coils, image, (x**2 + y**2 < 0.6)


@pytest.mark.parametrize("estimate", [walsh_maps, ratio_maps])
def test_estimates_recover_known_coils_up_to_phase(estimate):
    coils, image, core = object_and_coils()
    maps = estimate(coils * image)
    energy = (maps.abs() ** 2).sum(1)[:, core]
    torch.testing.assert_close(energy, torch.ones_like(energy), atol=1e-5, rtol=0)
    error = (relative_phase(maps) - relative_phase(coils)).abs()[:, :, core]
    assert float(error.max()) < 0.03


def test_walsh_from_the_calibration_centre_of_undersampled_data():
    config = SimulationConfig(size=64, noise_sigma=(0.002, 0.002), acceleration=4.0)
    sample = SimulatedDataset(config, "test", 1, seed=0)[0]
    images = calibration_images(sample["kspace"][None], sample["mask"][None])
    maps = walsh_maps(images, window=9)
    core = sample["brain_mask"][None, None].expand_as(maps)
    error = (relative_phase(maps) - relative_phase(sample["coil_maps"][None])).abs()[core]
    assert float(error.mean()) < 0.05


def test_calibration_needs_common_lines_and_estimates_validate():
    kspace = fft2c(torch.ones(1, 2, 3, 8, 8, dtype=torch.complex64))
    gen = torch.Generator().manual_seed(0)
    mask = variable_density_mask(1, 2, 8, acceleration=2, n_center=0, generator=gen)
    mask[:, 0] = False
    mask[:, 0, 0, 0] = True
    with pytest.raises(ValueError, match="in common"):
        calibration_images(kspace, mask)
    with pytest.raises(ValueError, match="window"):
        walsh_maps(torch.ones(1, 2, 8, 8, dtype=torch.complex64), window=4)
    with pytest.raises(ValueError, match="coil_images must be complex"):
        ratio_maps(torch.ones(1, 2, 8, 8))
