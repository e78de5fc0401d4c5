"""RD-NLS-PR fits of magnitude inversion-recovery and Look-Locker series."""

import math

import pytest
import torch

from pinqi.evaluation.magnitude import fit_magnitude_recovery

#: Delays in s chosen so that the nulls of T1 in (0.2, 4) s fall between every pair.
TI = torch.tensor([0.1, 0.2, 0.35, 0.5, 0.8, 1.2, 1.8, 2.4, 3.0], dtype=torch.float64)


def rician(signal: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """|signal + complex Gaussian noise|: magnitude data with Rician noise."""
    g = torch.Generator().manual_seed(seed)
    real = signal + sigma * torch.randn(signal.shape, generator=g, dtype=signal.dtype)
    imag = sigma * torch.randn(signal.shape, generator=g, dtype=signal.dtype)
    return torch.sqrt(real**2 + imag**2)


def t1_values(n: int = 120) -> torch.Tensor:
    return torch.exp(torch.linspace(math.log(0.2), math.log(4.0), n, dtype=torch.float64))


def test_polarity_restored_fit_recovers_t1_with_nulls_between_every_pair_of_delays():
    t1 = t1_values()
    a, b = 1.0, -1.9  # incomplete inversion (efficiency 0.9)
    signal = a + b * torch.exp(-TI[:, None] / t1)
    # SNR 5000: at 1000 the longest T1 (beyond the last delay) already scatter by ~1.3 %
    fit = fit_magnitude_recovery(rician(signal, 2e-4).reshape(len(TI), 12, 10), TI)
    assert set(fit.null_index.flatten().tolist()) == set(range(1, len(TI)))
    torch.testing.assert_close(fit.t.flatten(), t1, rtol=0.01, atol=0)
    torch.testing.assert_close(fit.a.flatten(), torch.full_like(t1, a), rtol=0.01, atol=0)
    assert not bool(fit.at_bound.any())


def test_without_polarity_restoration_the_fit_misses_the_null():
    t1 = t1_values(40)
    signal = 1.0 - 1.9 * torch.exp(-TI[:, None] / t1)
    fit = fit_magnitude_recovery(signal.abs(), TI, restore_polarity=False)
    assert float((fit.t / t1 - 1).abs().max()) > 0.2


def test_delay_order_does_not_matter():
    t1 = t1_values(20)
    signal = (1.0 - 2.0 * torch.exp(-TI[:, None] / t1)).abs()
    order = torch.randperm(len(TI), generator=torch.Generator().manual_seed(3))
    sorted_fit = fit_magnitude_recovery(signal, TI)
    shuffled_fit = fit_magnitude_recovery(signal[order], TI[order])
    torch.testing.assert_close(shuffled_fit.t, sorted_fit.t)


def test_look_locker_correction_recovers_t1_from_a_molli_5_3_3_scheme():
    """MOLLI 5(3)3: 5 images after a first inversion, 3 heartbeats pause, 3 after a second.

    Apparent recovery S = |A - B exp(-TI/T1*)| with B/A = 1 + T1/T1* (ideal Look-Locker
    readout); T1 = T1* (B/A - 1) = T1* (-b/a - 1).
    """
    rr = 0.9
    ti = torch.tensor(
        [0.1 + k * rr for k in range(5)] + [0.18 + k * rr for k in range(3)], dtype=torch.float64
    )
    t1 = torch.exp(torch.linspace(math.log(0.3), math.log(2.0), 30, dtype=torch.float64))
    factor = torch.linspace(0.55, 0.9, 30, dtype=torch.float64)  # T1* / T1
    t1_star = factor * t1
    amplitude = 0.8
    signal = amplitude - amplitude * (1 + 1 / factor) * torch.exp(-ti[:, None] / t1_star)
    fit = fit_magnitude_recovery(rician(signal, 1e-4), ti)
    torch.testing.assert_close(fit.t, t1_star, rtol=0.01, atol=0)
    torch.testing.assert_close(fit.look_locker_t1(), t1, rtol=0.01, atol=0)


def test_t1_beyond_the_search_range_is_flagged():
    signal = (1.0 - 2.0 * torch.exp(-TI[:, None] / torch.tensor([50.0, 1.0]))).abs()
    fit = fit_magnitude_recovery(signal, TI, t_range=(0.02, 10.0))
    assert fit.at_bound.tolist() == [True, False]


@pytest.mark.parametrize(
    ("magnitude", "ti", "message"),
    [
        (torch.ones(5, 4), TI, "there are 9 delays"),
        (torch.full((9, 4), float("nan")), TI, "NaN or Inf"),
        (torch.ones(2, 4), TI[:2], "at least 3 delays"),
        (torch.ones(9, 4), -TI, "non-negative"),
        (torch.ones(9, 4, dtype=torch.complex64), TI, "real floating point"),
    ],
)
def test_bad_input_is_named(magnitude, ti, message):
    with pytest.raises(ValueError, match=message):
        fit_magnitude_recovery(magnitude, ti)
