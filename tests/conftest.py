import pytest
import torch

from pinqi.physics import birdcage_maps, variable_density_mask

TAU = (0.5, 1.0, 1.5, 2.0, 8.0)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Every test problem is small: a second thread adds overhead and stalls on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def small_acquisition(
    batch: int = 2,
    n_tau: int = 3,
    n_coils: int = 4,
    size: tuple[int, int] = (8, 8),
    acceleration: float = 2.0,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coil maps (complex) and a line mask of a small problem."""
    gen = torch.Generator().manual_seed(seed)
    coils = birdcage_maps(n_coils, size, batch_size=batch, generator=gen, dtype=dtype)
    mask = variable_density_mask(batch, n_tau, size[1], acceleration=acceleration, generator=gen)
    return coils, mask


def random_parameters(
    batch: int, shape: tuple[int, ...], generator: torch.Generator, dtype=torch.float64
) -> torch.Tensor:
    """Plausible [Re M0, Im M0, R1] maps: |M0| in (0.3, 1), small phase, T1 in (0.3, 3) s."""
    magnitude = 0.3 + 0.7 * torch.rand(batch, *shape, generator=generator, dtype=dtype)
    phase = 0.3 * torch.randn(batch, *shape, generator=generator, dtype=dtype)
    t1 = 0.3 + 2.7 * torch.rand(batch, *shape, generator=generator, dtype=dtype)
    return torch.stack([magnitude * torch.cos(phase), magnitude * torch.sin(phase), 1 / t1], 1)


def random_ab_parameters(
    batch: int, shape: tuple[int, ...], generator: torch.Generator, dtype=torch.float64
) -> torch.Tensor:
    """[Re a, Im a, Re b, Im b, R1] of incomplete inversion recovery: b ~ -(1.6..2) a."""
    base = random_parameters(batch, shape, generator, dtype)
    factor = -(1.6 + 0.4 * torch.rand(batch, *shape, generator=generator, dtype=dtype))
    return torch.stack(
        [base[:, 0], base[:, 1], factor * base[:, 0], factor * base[:, 1], base[:, 2]], 1
    )
