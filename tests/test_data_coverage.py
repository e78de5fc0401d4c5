"""Training data beyond the brain (issue 9, part 6): T1 anywhere, test objects, phase, scale."""

import math
from dataclasses import replace

import pytest
import torch

from pinqi.data.datasets import SimulatedDataset
from pinqi.data.simulation import SimulationConfig, parameter_maps
from pinqi.data.tissues import N_CLASSES

SMALL = SimulationConfig(size=48)


def pure_classes(size=12):
    """Fractions with one pure block per tissue class 1..11 (class 0 elsewhere)."""
    fractions = torch.zeros(N_CLASSES, size, N_CLASSES * size)
    for k in range(N_CLASSES):
        fractions[k, :, k * size : (k + 1) * size] = 1
    return fractions


def class_t1(params, size=12):
    """T1 (s) at the centre of each class block, ``(N_CLASSES,)``."""
    centre = torch.arange(N_CLASSES) * size + size // 2
    return 1 / params[2, size // 2, centre].double()


def draw(config, seed, uniform_objects=False, fractions=None):
    generator = torch.Generator().manual_seed(seed)
    fractions = pure_classes() if fractions is None else fractions
    return parameter_maps(fractions, generator, config, uniform_objects)


def test_options_off_leave_the_papers_samples_unchanged():
    generator = torch.Generator().manual_seed(4)
    paper = parameter_maps(pure_classes(), generator)
    same = draw(replace(SMALL, t1_factor=1.0, intensity_range=(1.0, 1.0)), 4)
    assert torch.equal(paper, same)


def test_t1_factor_and_intensity_scale_the_same_draw():
    base = draw(SMALL, 1)
    shifted = draw(replace(SMALL, t1_factor=1.3, intensity_range=(2.0, 2.0)), 1)
    torch.testing.assert_close(shifted[2], base[2] / 1.3)
    torch.testing.assert_close(shifted[:2], 2 * base[:2])


def test_t1_anywhere_covers_the_range_in_every_class():
    config = replace(SMALL, t1_any_probability=1.0, t1_any_range=(0.1, 5.0))
    t1 = torch.stack([class_t1(draw(config, seed)) for seed in range(40)])[:, 1:]
    # the smooth T1 field changes T1 by at most 10 %
    assert float(t1.min()) >= 0.1 / 1.1 and float(t1.max()) <= 5.0 / 0.9
    # below every brain tissue's range and above CSF's, in the brain classes too
    brain = t1[:, 1:4]
    assert float(brain.min()) < 0.3 and float(brain.max()) > 4.0
    # the paper's draw stays inside the tissue ranges (with the 10 % field)
    paper = torch.stack([class_t1(draw(SMALL, seed)) for seed in range(40)])[:, 2]
    assert float(paper.min()) >= 1.2 / 1.1 and float(paper.max()) <= 2.0 / 0.9


def test_probability_mixes_tissue_and_wide_draws():
    config = replace(SMALL, t1_any_probability=0.5)
    grey = torch.stack([class_t1(draw(config, seed)) for seed in range(60)])[:, 2]
    inside = (grey >= 1.2 / 1.1) & (grey <= 2.0 / 0.9)
    assert 0.3 < float(inside.double().mean()) < 0.95


def test_test_objects_are_uniform_and_masked():
    config = replace(SMALL, uniform_probability=1.0, t1_any_range=(0.25, 0.25))
    sample = SimulatedDataset(config, "test", 3, seed=0)[2]
    mask = sample["brain_mask"]
    assert int(mask.sum()) > 50
    t1 = 1 / sample["params"][2][mask].double()
    torch.testing.assert_close(t1, torch.full_like(t1, 0.25), rtol=1e-5, atol=0)
    assert bool((sample["params"][:2, ~mask].abs() < 1.5).all())
    assert bool((sample["tissue"] == -1).all())  # test objects are no tissues


def test_scanner_phase_spans_the_circle():
    config = replace(SMALL, phase_any_probability=1.0)
    mean_phase = []
    spread = []
    for seed in range(30):
        params = draw(config, seed, fractions=pure_classes())
        phase = torch.atan2(params[1], params[0])[:, 12:]
        mean_phase.append(float(torch.angle(torch.exp(1j * phase.double()).mean())))
        spread.append(float(phase.max() - phase.min()))
    assert min(mean_phase) < -2.0 and max(mean_phase) > 2.0
    assert max(spread) > 1.0
    paper = torch.stack([draw(SMALL, s) for s in range(30)])
    assert float(torch.atan2(paper[:, 1], paper[:, 0]).abs().max()) < 1.2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"t1_any_probability": 1.5}, "t1_any_probability must be a probability"),
        ({"uniform_probability": -0.1}, "uniform_probability must be a probability"),
        ({"t1_any_range": (0.0, 5.0)}, "t1_any_range must be a range"),
        ({"intensity_range": (2.0, 1.0)}, "intensity_range must be a range"),
        ({"t1_factor": math.nan}, "t1_factor must be positive"),
    ],
)
def test_bad_coverage_options_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        replace(SMALL, **change)


def test_coverage_options_survive_json():
    config = replace(
        SMALL, t1_any_probability=0.3, t1_any_range=(0.1, 4.0), intensity_range=(0.5, 2)
    )
    assert SimulationConfig.from_json(config.to_json()) == config
