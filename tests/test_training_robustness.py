"""Training robustness: non-finite steps, solver diagnostics, resumes, schedules, weight decay,
fresh samples with persistent workers and the model card's commit.

The training runs use the TINY configuration of ``test_training`` (16x16, 2 iterations); the
runs several tests look at are module fixtures, made once.
"""

import contextlib
import copy
import csv
import io
import itertools
import math
import shutil
import subprocess
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import pinqi
from pinqi.config import ExperimentConfig
from pinqi.data.brainweb import SPLITS
from pinqi.data.datasets import EpochIndexedDataset, EpochSampler, SimulatedDataset
from pinqi.solvers import ConvergenceWarning
from pinqi.training import run
from pinqi.training.checkpoints import model_card, package_commit
from pinqi.training.module import (
    NonFiniteTrainingError,
    PINQITask,
    SimulatedDataModule,
    optimizer_groups,
)
from pinqi.training.schedule import phase_schedule

from brainweb_files import write_crisp
from test_training import TINY

REPO = Path(__file__).resolve().parents[1]


def tiny_config(**optim) -> ExperimentConfig:
    return ExperimentConfig.from_dict({**TINY, "optim": {**TINY["optim"], **optim}})


def read_log(out: Path) -> list[dict[str, str]]:
    with open(out / "logs" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], name: str) -> list[tuple[int, float]]:
    """(step, value) of the rows of ``metrics.csv`` that have ``name``."""
    return [(int(float(r["step"])), float(r[name])) for r in rows if r.get(name)]


def convergence_warning_action() -> str:
    """What the installed warnings filters do with a ConvergenceWarning of the solvers."""
    message = "signal fit: 3 pixel(s) did not reach the tolerance in 3 iterations"
    for action, text, category, module, lineno in warnings.filters:
        if (
            (text is None or text.match(message))
            and issubclass(ConvergenceWarning, category)
            and (module is None or module.match("pinqi.nets.pinqi"))
            and lineno == 0
        ):
            return action
    return warnings.defaultaction


def rising(values: list[float]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


def falling(values: list[float]) -> bool:
    return all(a >= b for a, b in itertools.pairwise(values))


def samples_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def recording_task_class(nan_gradient_at: tuple[int, int] | None = None):
    """A PINQITask that records its state around every training batch.

    Batches with NaN in ``params`` are marked ``nan_params``; at ``(epoch, batch_idx)`` =
    ``nan_gradient_at`` a tensor hook makes the gradient of P_theta's head weight NaN for that one
    step (the loss stays finite). Returns the class and the list of its instances.
    """
    tasks: list[PINQITask] = []

    class RecordingTask(PINQITask):
        def __init__(self, config: dict) -> None:
            super().__init__(config)
            self.records: list[dict] = []
            tasks.append(self)

        def _state(self) -> dict:
            return {
                "weights": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "optimizer": copy.deepcopy(self.optimizers().optimizer.state_dict()),
                "schedule": self.lr_schedulers().last_epoch,
                "global_step": self.global_step,
                "skipped": self.skipped_steps,
            }

        def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
            where = (self.current_epoch, batch_idx)
            if torch.isnan(batch["params"]).any():
                kind = "nan_params"
            elif where == nan_gradient_at:
                kind = "nan_gradient"
            else:
                kind = "clean"
            hook = None
            if kind == "nan_gradient":
                hook = self.model.parameter_net.head.weight.register_hook(
                    lambda grad: torch.full_like(grad, float("nan"))
                )
            self._record = {"where": where, "kind": kind, "before": self._state(), "hook": hook}

        def manual_backward(self, loss: torch.Tensor, *args, **kwargs) -> None:
            self._record["backward_loss"] = float(loss.detach())
            super().manual_backward(loss, *args, **kwargs)

        def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
            record = self._record
            hook = record.pop("hook")
            if hook is not None:
                hook.remove()
            record["after"] = self._state()
            self.records.append(record)

    return RecordingTask, tasks


def assert_state_unchanged(before: dict, after: dict) -> None:
    for name, value in before["weights"].items():
        assert torch.equal(value, after["weights"][name]), f"{name} changed"
    state_before, state_after = before["optimizer"]["state"], after["optimizer"]["state"]
    assert state_before.keys() == state_after.keys()
    for index, entries in state_before.items():
        for key, value in entries.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(state_after[index][key]))
    lrs = [[g["lr"] for g in s["optimizer"]["param_groups"]] for s in (before, after)]
    assert lrs[0] == lrs[1]
    assert before["schedule"] == after["schedule"]
    assert before["global_step"] == after["global_step"]


def poisoned_sample(bad: set[tuple[int, int]] | None):
    """SimulatedDataset.sample with NaN params for the training samples (epoch, index) in bad
    (all training samples if bad is None)."""
    original = SimulatedDataset.sample

    def sample(self: SimulatedDataset, index: int, epoch: int) -> dict[str, torch.Tensor]:
        item = original(self, index, epoch)
        if self.split == "train" and (bad is None or (epoch, index) in bad):
            item["params"] = torch.full_like(item["params"], float("nan"))
        return item

    return sample


# --- 1. non-finite steps -------------------------------------------------------------------


@pytest.fixture(scope="module")
def nonfinite_run(tmp_path_factory):
    """One epoch of 5 (pretraining) batches: NaN params in batch 1, a NaN gradient in batch 3;
    max_nonfinite_steps 2 (two skips, not in a row)."""
    config = tiny_config(samples_per_epoch=10, max_epochs=1, max_nonfinite_steps=2)
    n, size = config.optim.samples_per_epoch, config.optim.batch_size
    sampler = EpochSampler(n, config.seed)
    sampler.set_epoch(0)
    bad = {divmod(list(sampler)[size], n)}  # first sample of batch 1
    task_class, tasks = recording_task_class(nan_gradient_at=(0, 3))
    out = tmp_path_factory.mktemp("nonfinite")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SimulatedDataset, "sample", poisoned_sample(bad))
        patch.setattr(run, "PINQITask", task_class)
        last = run.train(config, out)
    (task,) = tasks
    return SimpleNamespace(config=config, task=task, out=out, last=last)


def test_nan_batch_changes_no_weight_nor_optimizer_state(nonfinite_run):
    records = nonfinite_run.task.records
    (nan,) = [r for r in records if r["kind"] == "nan_params"]
    assert nan["where"] == (0, 1)
    assert nan["before"]["optimizer"]["state"]  # Adam moments exist: the check has teeth
    assert "backward_loss" not in nan  # no backward pass on a non-finite loss
    assert_state_unchanged(nan["before"], nan["after"])
    assert nan["after"]["skipped"] == nan["before"]["skipped"] + 1


def test_nan_gradient_with_finite_loss_is_skipped(nonfinite_run):
    (poisoned,) = [r for r in nonfinite_run.task.records if r["kind"] == "nan_gradient"]
    assert poisoned["where"] == (0, 3)
    assert math.isfinite(poisoned["backward_loss"])
    assert_state_unchanged(poisoned["before"], poisoned["after"])
    assert poisoned["after"]["skipped"] == poisoned["before"]["skipped"] + 1


def test_skipped_steps_are_counted_in_task_log_and_checkpoint(nonfinite_run):
    task = nonfinite_run.task
    assert task.skipped_steps == 2
    rows = read_log(nonfinite_run.out)
    assert "skipped_steps" in rows[0]
    counts = column(rows, "skipped_steps")  # a running total from the first skip (step 1) on
    assert counts[0] == (1, 1.0) and (3, 2.0) in counts and counts[-1][1] == 2.0
    assert falling([-count for _, count in counts])
    checkpoint = torch.load(nonfinite_run.last, map_location="cpu", weights_only=False)
    assert checkpoint["skipped_steps"] == 2


def test_training_continues_after_an_isolated_nonfinite_step(nonfinite_run):
    task = nonfinite_run.task
    records = task.records
    kinds = ["clean", "nan_params", "clean", "nan_gradient", "clean"]
    assert [r["kind"] for r in records] == kinds
    # max_nonfinite_steps = 2 skipped steps, but not in a row: no error, counter reset
    assert task.skipped_in_a_row == 0
    for record in records[2::2]:  # the clean batches after a skipped one
        before, after = record["before"], record["after"]
        assert math.isfinite(record["backward_loss"])
        assert after["global_step"] == before["global_step"] + 1
        assert after["schedule"] == before["schedule"] + 1
        assert any(
            not torch.equal(before["weights"][k], after["weights"][k]) for k in before["weights"]
        )
    losses = dict(column(read_log(nonfinite_run.out), "train_loss"))
    assert {0, 2, 4} <= losses.keys()
    assert all(math.isfinite(losses[step]) for step in (0, 2, 4))
    checkpoint = torch.load(nonfinite_run.last, map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 3  # 5 batches, 2 skipped


def test_skipped_steps_log_no_stale_training_loss(nonfinite_run):
    skipped = [r for r in read_log(nonfinite_run.out) if r["step"] in ("1", "3") and r["epoch"]]
    assert len(skipped) == 2  # the rows of the two skipped batches
    for row in skipped:
        assert row["train_loss"] in ("", "nan") and row["grad_norm"] in ("", "nan"), row


def test_max_nonfinite_steps_in_a_row_stop_the_run(tmp_path):
    config = tiny_config(max_nonfinite_steps=2)
    task_class, tasks = recording_task_class()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SimulatedDataset, "sample", poisoned_sample(None))
        patch.setattr(run, "PINQITask", task_class)
        with pytest.raises(
            NonFiniteTrainingError,
            match=r"2 training steps in a row .* optim\.max_nonfinite_steps = 2",
        ):
            run.train(config, tmp_path / "run")
    (task,) = tasks
    assert task.skipped_steps == 2  # not stopped at the first one
    assert task.global_step == 0


def test_resume_after_skipped_steps_keeps_every_logged_training_step(nonfinite_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(nonfinite_run.out, out)
    trained = {step for step, _ in column(read_log(out), "train_loss")} - {1, 3}  # not skipped
    assert trained == {0, 2, 4}
    longer = tiny_config(samples_per_epoch=10, max_epochs=2, max_steps=4, max_nonfinite_steps=2)
    with contextlib.redirect_stdout(io.StringIO()):
        run.train(longer, out, resume="auto")
    steps = [step for step, _ in column(read_log(out), "train_loss")]
    assert len(steps) == len(set(steps))
    assert trained <= set(steps), f"rows of steps {sorted(trained - set(steps))} lost"


# --- 2. and 3. one run, resumed: solver diagnostics, warnings, continuous log ----------------


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """resume="auto" in an empty folder, 3 steps with a checkpoint every 2: the run ends one
    logged step after its last checkpoint (step 2), as if interrupted. Then resume="auto" to 4
    steps. Steps 0-1 are pretraining, 2-3 end to end. Records stdout, the log before the
    resume and the warnings' action on a ConvergenceWarning before and after each run."""
    out = tmp_path_factory.mktemp("resumed")
    actions = [convergence_warning_action()]
    stdout, first_log, checkpoint_steps = [], None, []
    for steps in (3, 4):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            last = run.train(
                tiny_config(max_steps=steps, checkpoint_every_n_steps=2), out, resume="auto"
            )
        stdout.append(printed.getvalue())
        actions.append(convergence_warning_action())
        checkpoint = torch.load(last, map_location="cpu", weights_only=False)
        checkpoint_steps.append(checkpoint["global_step"])
        first_log = first_log or read_log(out)
    return SimpleNamespace(
        out=out,
        last=last,
        stdout=stdout,
        actions=actions,
        first_log=first_log,
        checkpoint_steps=checkpoint_steps,
    )


def test_solver_diagnostics_are_logged_in_end_to_end_steps(resumed_run):
    rows = [r for r in read_log(resumed_run.out) if r.get("train_loss")]
    end_to_end = [r for r in rows if float(r["pretraining"]) == 0.0]
    pretraining = [r for r in rows if float(r["pretraining"]) == 1.0]
    assert len(end_to_end) == 2 and len(pretraining) == 2
    for row in end_to_end:
        residual, unconverged = float(row["cg_residual"]), float(row["fit_unconverged"])
        assert math.isfinite(residual) and residual >= 0
        assert 0 <= unconverged <= 1
    assert not any(r["cg_residual"] or r["fit_unconverged"] for r in pretraining)


def test_training_installs_no_filter_that_ignores_convergence_warnings(resumed_run):
    before, *after = resumed_run.actions
    assert before != "ignore"
    assert after == [before, before]


def test_resume_auto_continues_one_log_without_duplicate_steps(resumed_run):
    assert resumed_run.checkpoint_steps == [2, 4]  # resumed from step 2 (N), ran to 4 (M)
    assert [s for s, _ in column(resumed_run.first_log, "train_loss")] == [0, 1, 2]
    assert "resuming from" in resumed_run.stdout[1]
    rows = read_log(resumed_run.out)
    assert [step for step, _ in column(rows, "train_loss")] == [0, 1, 2, 3]
    assert [step for step, _ in column(rows, "lr-AdamW/pg1")] == [0, 1, 2, 3]
    assert len(column(rows, "val_loss")) == 2  # one validation per epoch


def test_resume_auto_without_checkpoint_says_it_starts_fresh(resumed_run):
    first = resumed_run.stdout[0]
    assert "no checkpoint" in first and "starting a fresh run" in first
    assert "resuming from" not in first


# --- 4. a warm-up and a cosine per phase ---------------------------------------------------


def test_phase_schedule_restarts_warm_up_and_cosine_at_the_phase_boundary():
    factors = [phase_schedule(s, 100, 400, 5, 0.1) for s in range(400)]
    assert factors[0] == pytest.approx(0.1) and factors[5] == pytest.approx(1.0)
    assert factors[99] < 0.11
    assert factors[100] == pytest.approx(0.1) and factors[105] == pytest.approx(1.0)
    assert factors[399] < 0.11
    assert rising(factors[0:6]) and falling(factors[5:100])
    assert rising(factors[100:106]) and falling(factors[105:400])


def test_learning_rate_warms_up_and_decays_in_each_training_phase():
    preset = ExperimentConfig.from_yaml(REPO / "configs" / "cpu.yaml").to_dict()
    preset["optim"].update(
        samples_per_epoch=40, batch_size=4, pretrain_epochs=1, max_steps=40, warmup_steps=5
    )
    config = ExperimentConfig.from_dict(preset)
    optim = config.optim
    task = PINQITask(config.to_dict())
    assert task.pretraining_steps() == 10 and task.total_steps() == 40
    setup = task.configure_optimizers()
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(40):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()  # no gradients: nothing changes, but the order is the usual one
        scheduler.step()
    decay, no_decay, strengths = (list(lr) for lr in zip(*lrs, strict=True))
    assert decay == no_decay
    pre, end = decay[:10], decay[10:]
    lr, low = optim.lr_networks, optim.min_lr_factor * optim.lr_networks

    assert pre[0] == pytest.approx(low)
    assert max(pre) == pytest.approx(lr)
    peak = pre.index(max(pre))
    assert falling(pre[peak:])
    assert pre[-1] < 0.1 * lr

    assert end[0] == pytest.approx(low)  # warms up again
    assert max(end) == pytest.approx(lr)
    peak = end.index(max(end))
    assert peak > 0 and rising(end[: peak + 1]) and falling(end[peak:])
    assert end[-1] < 0.1 * lr

    for step, (value, strength) in enumerate(zip(decay, strengths, strict=True)):
        factor = phase_schedule(step, 10, 40, optim.warmup_steps, optim.min_lr_factor)
        assert value == pytest.approx(lr * factor)
        assert strength == pytest.approx(optim.lr_lambdas * factor)


def test_every_learned_strength_is_in_the_strengths_group():
    # DOPAMINE's step sizes mu are strengths like its lambda (the authors' lr_lam group)
    config = tiny_config().with_overrides(["method.name=dopamine", "method.iterations=2"])
    model = PINQITask(config.to_dict()).model
    strengths = optimizer_groups(model, config.optim)[2]["params"]
    assert {id(p) for p in strengths} == {id(model.raw_mu), id(model.raw_lambda)}


# --- 5. weight decay -----------------------------------------------------------------------


def test_weight_decay_acts_on_conv_and_linear_weights_only():
    config = tiny_config(weight_decay=0.1, lr_networks=0.1, lr_lambdas=0.1)
    model = PINQITask(config.to_dict()).model
    groups = optimizer_groups(model, config.optim)
    decay_of = {id(p): group["weight_decay"] for group in groups for p in group["params"]}
    parameters = dict(model.named_parameters())
    assert sum(len(group["params"]) for group in groups) == len(decay_of) == len(parameters)

    layers = (nn.Conv2d, nn.Conv3d, nn.Linear)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    weights = [m.weight for m in model.modules() if isinstance(m, layers)]
    undecayed = {
        "strengths": [p for n, p in parameters.items() if n.startswith("raw_lambda")],
        "alphas": [p for n, p in parameters.items() if n.endswith(".alpha")],
        "norms": [
            p for m in model.modules() if isinstance(m, nn.GroupNorm) for p in m.parameters()
        ],
        "conv biases": [m.bias for m in convs if m.bias is not None],
    }
    assert weights and all(decay_of[id(p)] == 0.1 for p in weights)
    for kind, members in undecayed.items():
        assert members and all(decay_of[id(p)] == 0.0 for p in members), kind

    optimizer = torch.optim.AdamW(groups)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    before = {id(p): p.detach().clone() for p in model.parameters()}
    optimizer.step()
    for p in weights:  # decoupled decay alone: w <- (1 - lr * weight_decay) w
        torch.testing.assert_close(p.detach(), before[id(p)] * (1 - 0.1 * 0.1))
    conv_weights = [m.weight for m in convs if before[id(m.weight)].any()]  # some start at 0
    assert conv_weights and all(p.detach().norm() < before[id(p)].norm() for p in conv_weights)
    for kind, members in undecayed.items():
        assert all(torch.equal(p.detach(), before[id(p)]) for p in members), kind


# --- 6. fresh samples every epoch, persistent workers, preloaded anatomy --------------------


def test_epoch_sampler_yields_a_fresh_reproducible_permutation_per_epoch():
    n = 8
    sampler = EpochSampler(n, seed=3)
    assert len(sampler) == n
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(epoch * n, (epoch + 1) * n))
        orders.append([i - epoch * n for i in order])
        again = EpochSampler(n, seed=3)
        again.set_epoch(epoch)
        assert list(again) == order
    assert orders[0] != orders[1] != orders[2] != orders[0]
    assert list(EpochSampler(n, seed=4)) != list(EpochSampler(n, seed=3))


def test_epoch_sampler_resumes_within_the_named_epoch_only():
    sampler = EpochSampler(8, seed=3)
    sampler.set_epoch(1)
    whole = list(sampler)
    sampler.resume(1, 6)
    assert list(sampler) == whole[6:]  # the rest of epoch 1
    assert list(sampler) == whole  # once: the next pass is the whole epoch again
    sampler.resume(1, 6)
    sampler.set_epoch(2)  # resumed at the end of epoch 1: epoch 2 is untouched
    assert len(list(sampler)) == 8
    with pytest.raises(ValueError, match="cannot resume after 9 of 8 samples"):
        sampler.resume(1, 9)


def test_epoch_indexed_dataset_gives_the_sample_of_the_epoch():
    n = 2
    dataset = SimulatedDataset(tiny_config().data, "train", n, seed=0)
    indexed = EpochIndexedDataset(dataset)
    assert len(indexed) == n
    items = {}
    for epoch in (0, 1):
        for i in range(n):
            items[epoch, i] = indexed[epoch * n + i]
            assert samples_equal(items[epoch, i], dataset.sample(i, epoch))
            dataset.set_epoch(epoch)
            assert samples_equal(items[epoch, i], dataset[i])
    for i in range(n):  # fresh samples in the next epoch
        assert not torch.equal(items[1, i]["kspace"], items[0, i]["kspace"])


def test_persistent_workers_get_fresh_samples_every_epoch():
    config = tiny_config(num_workers=2)
    datamodule = SimulatedDataModule(config)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers
    n, size = config.optim.samples_per_epoch, config.optim.batch_size
    epochs = []
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)  # what Lightning does at every epoch start
        batches = [batch["kspace"] for batch in loader]
        order = list(loader.sampler)
        expected = [
            torch.stack([datamodule.train_set.sample(i % n, epoch)["kspace"] for i in chunk])
            for chunk in (order[k : k + size] for k in range(0, n, size))
        ]
        assert len(batches) == len(expected) == n // size
        assert all(torch.equal(a, b) for a, b in zip(batches, expected, strict=True))
        epochs.append(batches)
    assert not any(torch.equal(a, b) for a in epochs[0] for b in epochs[1])


def test_datamodule_setup_preloads_every_brainweb_subject(tmp_path):
    train_subjects = SPLITS["train"][:2]
    for subject in (*train_subjects, *SPLITS["val"]):
        write_crisp(tmp_path, subject)
    data = {**TINY["data"], "anatomy": "brainweb", "brainweb_dir": str(tmp_path)}
    config = ExperimentConfig.from_dict({**TINY, "data": data})
    with pytest.warns(UserWarning, match="not in"):  # most training subjects are missing
        datamodule = SimulatedDataModule(config)
    train_anatomy, val_anatomy = datamodule.train_set.anatomy, datamodule.val_set.anatomy
    assert not train_anatomy._loaded and not val_anatomy._loaded
    datamodule.setup("fit")
    assert set(train_anatomy._loaded) == set(train_subjects)
    assert set(val_anatomy._loaded) == set(SPLITS["val"])
    loaded = dict(train_anatomy._loaded)
    datamodule.setup("validate")  # a second setup loads nothing again
    assert all(train_anatomy._loaded[s] is subject for s, subject in loaded.items())


# --- 7. the model card's commit -------------------------------------------------------------


def git(folder: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(folder), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def inside_another_repository(tmp_path, monkeypatch) -> str:
    """chdir into a fresh git repository with one commit; returns that commit."""
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    (other / "file.txt").write_text("other project\n")
    git(other, "add", "file.txt")
    identity = ("-c", "user.name=test", "-c", "user.email=test@example.org")
    git(other, *identity, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "other")
    monkeypatch.chdir(other)
    return git(other, "rev-parse", "HEAD")


def this_checkout_head() -> str:
    return git(Path(pinqi.__file__).resolve().parents[2], "rev-parse", "HEAD")


def test_package_commit_is_this_checkout_even_from_another_repository(
    inside_another_repository,
):
    head = this_checkout_head()
    assert head != inside_another_repository
    assert package_commit() in (head, head + "+dirty")


def test_model_card_records_the_package_commit_and_version(resumed_run, inside_another_repository):
    card = model_card(resumed_run.last)
    head = this_checkout_head()
    assert card["commit"] in (head, head + "+dirty")
    assert card["pinqi_version"] == pinqi.__version__
    assert card["training_steps"] == 4
