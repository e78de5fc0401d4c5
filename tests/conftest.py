import numpy as np
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


def nrmse(estimate, truth, inside) -> float:
    """||estimate - truth|| / ||truth|| over the pixels ``inside`` (arrays or tensors, real or
    complex)."""
    estimate, truth, inside = (np.asarray(a) for a in (estimate, truth, inside))
    inside = inside.astype(bool)
    difference = (estimate - truth)[inside].astype(np.complex128)
    return float(np.linalg.norm(difference) / np.linalg.norm(truth[inside].astype(np.complex128)))


def wrong_maps(truth, inside, flips: bool = True) -> dict[str, np.ndarray]:
    """Plausible wrong answers made from a true map ``(..., H, W)``, named by the mistake.

    The best constant (the mean inside: the data ignored), the map transposed, flipped along
    either axis (``flips=False`` leaves those out, for anatomy too symmetric to tell them
    apart), and scaled by 2, sqrt(2), 1/sqrt(2) and 1/2. An accuracy check whose tolerance
    lets one of these pass cannot tell a right answer from this wrong one.
    """
    truth, inside = np.asarray(truth, dtype=np.float64), np.asarray(inside).astype(bool)
    wrong = {
        "constant": np.full_like(truth, truth[inside].mean()),
        "transposed": np.swapaxes(truth, -1, -2),
    }
    if flips:
        wrong |= {"flipped rows": truth[..., ::-1, :], "flipped columns": truth[..., ::-1]}
    for name, factor in (("2", 2), ("sqrt(2)", np.sqrt(2)), ("1/sqrt(2)", 1 / np.sqrt(2))):
        wrong[f"x {name}"] = truth * factor
    wrong["x 1/2"] = truth / 2
    return wrong


def assert_accurate(estimate, truth, inside, tolerance: float, flips: bool = True) -> float:
    """nRMSE(estimate) < tolerance, and every map of :func:`wrong_maps` fails the same check.

    Returns the estimate's nRMSE.
    """
    error = nrmse(estimate, truth, inside)
    assert error < tolerance, f"nRMSE {error:.4f} >= {tolerance}"
    for name, wrong in wrong_maps(truth, inside, flips).items():
        control = nrmse(wrong, truth, inside)
        assert control >= tolerance, f"the {name} map passes too (nRMSE {control:.4f})"
    return error
