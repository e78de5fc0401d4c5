"""optim.deep_supervision and optim.t1_weight_power reach the training loss of PINQI."""

import numpy as np
import pytest
import torch

from pinqi.config import ExperimentConfig
from pinqi.nets.pinqi import PINQIOutput
from pinqi.training.module import PINQITask
from pinqi.training.objectives import training_loss

from test_training import TINY


def expected_loss(iterates, target, inside, deep_supervision, outside, power) -> float:
    """The documented loss, in numpy: the final iterate's weighted MSE plus deep_supervision x
    each earlier one's; pixel weight 1 inside the brain, ``outside`` outside; the R1 error
    weighted by T1_true ** power."""
    target = target.numpy()
    pixel = np.where(inside.numpy()[:, None], 1.0, outside)
    t1_true = 1 / np.maximum(target[:, -1:], 0.1)
    channel = np.concatenate([np.ones_like(target[:, :-1]), t1_true**power], 1)
    losses = [float(np.mean((p.numpy() - target) ** 2 * channel * pixel)) for p in iterates]
    return losses[-1] + deep_supervision * sum(losses[:-1])


@pytest.mark.parametrize(
    ("deep_supervision", "power"), [(0.0, 0.0), (0.05, 0.0), (0.5, 0.0), (0.5, 4.0), (0.0, 2.0)]
)
def test_loss_settings_reach_the_training_loss(deep_supervision, power):
    overrides = [f"optim.deep_supervision={deep_supervision}", f"optim.t1_weight_power={power}"]
    config = ExperimentConfig.from_dict(TINY).with_overrides(overrides)
    task = PINQITask(config.to_dict())  # the settings as a training run holds them
    generator = torch.Generator().manual_seed(0)
    shape = (2, 3, 8, 8)
    values = torch.rand(3, 2, 8, 8, generator=generator, dtype=torch.float64)
    target = torch.stack([values[0], values[1], 0.25 + 4 * values[2]], 1)  # T1 0.24-4 s
    iterates = [
        target + 0.1 * torch.randn(shape, generator=generator, dtype=torch.float64)
        for _ in range(3)
    ]
    inside = torch.rand(2, 8, 8, generator=generator) > 0.3
    batch = {"params": target, "brain_mask": inside}
    output = PINQIOutput(iterates, [], [])
    loss = float(training_loss(task.model, batch, output, task.config.optim))
    outside = task.config.optim.outside_weight
    assert loss == pytest.approx(
        expected_loss(iterates, target, inside, deep_supervision, outside, power), rel=1e-6
    )
    # controls: the loss with the other settings is another number
    if deep_supervision:
        without = expected_loss(iterates, target, inside, 0.0, outside, power)
        assert loss != pytest.approx(without, rel=1e-3)
    if power:
        unweighted = expected_loss(iterates, target, inside, deep_supervision, outside, 0.0)
        assert loss != pytest.approx(unweighted, rel=1e-3)
