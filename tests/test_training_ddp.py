"""Distributed training (issue 18, part 6): Lightning DDP with 2 CPU processes (gloo) trains
like one process with the doubled batch."""

import contextlib
import io

import pytest
import torch
import torch.distributed as dist

from pinqi.config import ExperimentConfig
from pinqi.training.run import train

from test_training import TINY

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed (gloo)"
)


def config(batch_size: int, devices: int, strategy: str) -> ExperimentConfig:
    # no pretraining: its random interpolation weights are drawn per process
    optim = {
        **TINY["optim"],
        "batch_size": batch_size,
        "devices": devices,
        "strategy": strategy,
        "pretrain_epochs": 0,
        "samples_per_epoch": 8,
        "max_epochs": 1,
        "max_steps": 2,
        "val_samples": 2,
        "checkpoint_every_n_steps": 100,
    }
    return ExperimentConfig.from_dict({**TINY, "optim": optim})


def weights(checkpoint) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return state["state_dict"]


def test_two_ddp_processes_train_like_one_process_with_the_doubled_batch(tmp_path):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        single = train(config(4, 1, "auto"), tmp_path / "single")
        ddp = train(config(2, 2, "ddp_spawn"), tmp_path / "ddp")
        half = train(config(2, 1, "auto"), tmp_path / "half")
    one, two, control = weights(single), weights(ddp), weights(half)
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-6, msg=name)
    # a control (and proof that the runs trained): one process with half the batch sees
    # other samples and ends elsewhere
    differs = [n for n in one if not torch.allclose(control[n], one[n], rtol=1e-4, atol=1e-6)]
    assert differs
