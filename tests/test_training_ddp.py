"""Distributed training (issue 18, part 6): Lightning DDP with 2 CPU processes (gloo) trains
like one process with the doubled batch."""

import contextlib
import csv
import io
import os

import pytest
import torch
import torch.distributed as dist

from pinqi.config import ExperimentConfig
from pinqi.training.checkpoints import model_card
from pinqi.training.module import share_cpu_cores
from pinqi.training.run import train

from test_training import TINY

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed (gloo)"
)


def config(
    batch_size: int, devices: int, strategy: str, cpu_processes: int = 1
) -> ExperimentConfig:
    # no pretraining (test_..._pretrain_like_one_process covers it)
    optim = {
        **TINY["optim"],
        "batch_size": batch_size,
        "devices": devices,
        "strategy": strategy,
        "cpu_processes": cpu_processes,
        "pretrain_epochs": 0,
        "samples_per_epoch": 12,
        "max_epochs": 1,
        "max_steps": 3,
        "val_samples": 2,
        "checkpoint_every_n_steps": 100,
    }
    model = {**TINY["model"], "unet_precision": "fp32"}
    return ExperimentConfig.from_dict({**TINY, "model": model, "optim": optim})


def train_losses(out) -> list[float]:
    rows = list(csv.DictReader(open(out / "logs" / "metrics.csv")))
    return [float(r["train_loss"]) for r in rows if r.get("train_loss")]


def test_two_ddp_processes_train_like_one_process_with_the_doubled_batch(tmp_path):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        train(config(4, 1, "auto"), tmp_path / "single")
        train(config(2, 2, "ddp_spawn"), tmp_path / "ddp")
        train(config(2, 1, "auto"), tmp_path / "half")
        train(config(4, 1, "auto", cpu_processes=2), tmp_path / "shared")
    names = ("single", "ddp", "half", "shared")
    single, ddp, half, shared = (train_losses(tmp_path / n) for n in names)
    assert len(single) == len(ddp) == len(half) == len(shared) == 3
    # the same samples and weights at the first step: the same loss to rounding; later steps
    # follow within a tolerance (Adam's first steps amplify rounding in near-zero gradients)
    assert ddp[0] == pytest.approx(single[0], rel=1e-5)
    assert ddp == pytest.approx(single, rel=0.02)
    # cpu_processes: the same run as one process of the same batch_size, only placed otherwise
    assert shared[0] == pytest.approx(single[0], rel=1e-5)
    assert shared == pytest.approx(ddp, rel=1e-5)
    # a control: one process with half the batch sees other samples
    assert half[0] != pytest.approx(single[0], rel=0.02)
    # the card counts the samples of both processes; each process ran its share of the cores
    for name in ("single", "ddp", "shared"):
        assert model_card(tmp_path / name / "checkpoints" / "last.ckpt")["training_samples"] == 12
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    if "OMP_NUM_THREADS" in os.environ:
        threads = int(os.environ["OMP_NUM_THREADS"])
    for name in ("ddp", "shared"):
        devices = model_card(tmp_path / name / "checkpoints" / "last.ckpt")["devices"]
        assert devices == [f"2 x CPU ({threads} threads)"]


def test_cpu_processes_settings_are_checked():
    with pytest.raises(ValueError, match=r"batch_size 3 must be a multiple of optim\.cpu_proc"):
        config(3, 1, "auto", cpu_processes=2)
    with pytest.raises(ValueError, match=r"leave optim\.devices"):
        config(4, 2, "auto", cpu_processes=2)
    with pytest.raises(ValueError, match="positive integer"):
        config(4, 1, "auto", cpu_processes=0)
    on_gpu = config(4, 1, "auto", cpu_processes=2).with_overrides(["optim.accelerator=gpu"])
    assert on_gpu.optim.process_batch_size == 4  # a placement setting of the CPU only


def test_processes_share_the_cores(monkeypatch):
    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert share_cpu_cores(2) == max(1, cores // 2)
        assert share_cpu_cores(4 * cores) == 1
        torch.set_num_threads(before)
        monkeypatch.setenv("OMP_NUM_THREADS", str(before))
        assert share_cpu_cores(2) == before  # the user's setting stands
    finally:
        torch.set_num_threads(before)


def test_epoch_shares_of_processes_make_up_the_single_process_batches():
    from pinqi.data.datasets import EpochSampler

    single = list(EpochSampler(12, seed=3))
    shares = []
    for rank in range(2):
        sampler = EpochSampler(12, seed=3)
        sampler.distribute(rank, 2)
        shares.append(list(sampler))
        assert len(sampler) == 6
    for k in range(3):  # per-process batch 2, single-process batch 4
        together = shares[0][2 * k : 2 * k + 2] + shares[1][2 * k : 2 * k + 2]
        assert sorted(together) == sorted(single[4 * k : 4 * k + 4])
    resumed = EpochSampler(12, seed=3)
    resumed.distribute(1, 2)
    resumed.resume(0, 2)
    assert list(resumed) == shares[1][2:]
    with pytest.raises(ValueError, match="rank 2 is not one of 2"):
        resumed.distribute(2, 2)


def test_a_one_process_run_resumes_in_two_processes_with_the_unseen_samples(tmp_path):
    # the long run's case: trained in one process up to a mid-epoch checkpoint, resumed with
    # optim.cpu_processes 2; the steps after the resume see the samples the uninterrupted run
    # saw (same losses), not a restart of the epoch
    one = config(4, 1, "auto")
    optim = {**one.optim.__dict__, "samples_per_epoch": 16, "max_epochs": 2, "max_steps": 6}
    one = ExperimentConfig.from_dict({**one.to_dict(), "optim": optim})
    two = one.with_overrides(["optim.cpu_processes=2"])
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        train(one.with_overrides(["optim.checkpoint_every_n_steps=2"]), tmp_path / "whole")
        (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
        middle = torch.load(
            tmp_path / "whole" / "checkpoints" / "epoch=0-step=2.ckpt", weights_only=False
        )
        torch.save(middle, tmp_path / "resumed" / "checkpoints" / "last.ckpt")
        train(two, tmp_path / "resumed", resume="auto")
    whole, resumed = (train_losses(tmp_path / n) for n in ("whole", "resumed"))
    assert len(whole) == 6 and len(resumed) == 4  # the resumed log starts after step 2
    assert resumed == pytest.approx(whole[2:], rel=0.02)
    state = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 6 and state["samples_trained"] == 24


def test_cpu_processes_and_ddp_pretrain_like_one_process(tmp_path):
    # the P_theta pretraining leaves Y_theta and the strengths unused (DDP must allow that),
    # and its random interpolation weights are drawn for the whole step on every process
    base = config(4, 1, "auto")
    optim = {**base.optim.__dict__, "pretrain_epochs": 1, "samples_per_epoch": 12}
    optim |= {"max_epochs": 2, "max_steps": 4}  # 3 pretraining steps, then 1 end-to-end step
    one = ExperimentConfig.from_dict({**base.to_dict(), "optim": optim})
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        train(one, tmp_path / "one")
        train(one.with_overrides(["optim.cpu_processes=2"]), tmp_path / "two")
        ddp = ["optim.devices=2", "optim.strategy=ddp_spawn", "optim.batch_size=2"]
        train(one.with_overrides(ddp), tmp_path / "ddp")
    single, shared, ddp = (train_losses(tmp_path / n) for n in ("one", "two", "ddp"))
    assert len(single) == len(shared) == len(ddp) == 4
    for losses in (shared, ddp):
        assert losses[0] == pytest.approx(single[0], rel=1e-5)
        assert losses == pytest.approx(single, rel=0.02)
