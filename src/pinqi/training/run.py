"""``pinqi train``: a resumable Lightning run with checkpoints and one continuous CSV log."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from pinqi.config import ExperimentConfig, OptimConfig
from pinqi.training.checkpoints import read_checkpoint
from pinqi.training.clock import TrainingClock
from pinqi.training.module import PINQITask, SimulatedDataModule


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is continued, not deleted."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])


class ContinuousCSVLogger(CSVLogger):
    """A CSV logger whose ``metrics.csv`` survives resumes (one log for the whole run)."""

    @property
    def experiment(self) -> ExperimentWriter:
        """The writer, created on first use."""
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def _truncate_log(log: Path, step: int) -> None:
    """Drop the rows of ``log`` from ``step`` on: the resumed run logs them again."""
    if not log.is_file():
        return
    with open(log, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], list(reader)
    kept = [r for r in rows if r.get("step") and int(float(r["step"])) < step]
    with open(log, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)


def _resume_checkpoint(out: Path, resume: str | Path | None) -> Path | None:
    """The checkpoint to resume from (``"auto"``: ``out/checkpoints/last.ckpt`` if present)."""
    if resume is None:
        return None
    if str(resume) == "auto":
        last = out / "checkpoints" / "last.ckpt"
        if last.is_file():
            print(f"resuming from {last}")
            return last
        print(f"--resume auto: no checkpoint in {last.parent}; starting a fresh run")
        return None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint to resume from not found: {path}")
    return path


def _initialise(task: PINQITask, init: str | Path) -> None:
    """Copy the network weights and strengths of ``init`` into ``task``'s model."""
    from pinqi.training.checkpoints import load_model

    source, _ = load_model(init)
    try:
        task.model.load_state_dict(source.state_dict())
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise ValueError(
            f"--init {init}: its network does not match the preset's model section "
            f"(same features, norm groups, iterations and switches needed): {first}"
        ) from None
    print(f"initialised the network from {init}")


def _placement(optim: OptimConfig) -> tuple[int | str, str]:
    """Lightning's ``devices`` and ``strategy`` for ``optim``.

    ``cpu_processes`` W > 1: W spawned processes (``ddp_spawn``), each with batch_size / W.
    DDP always runs with the search for unused parameters: the P_theta pretraining leaves
    Y_theta and the strengths without gradients, which plain DDP refuses.
    """
    if optim.processes_on_cpu > 1:
        return optim.processes_on_cpu, "ddp_spawn_find_unused_parameters_true"
    if optim.strategy in ("ddp", "ddp_spawn"):
        return optim.devices, f"{optim.strategy}_find_unused_parameters_true"
    return optim.devices, optim.strategy


def train(
    config: ExperimentConfig,
    out: str | Path,
    resume: str | Path | None = None,
    init: str | Path | None = None,
) -> Path:
    """Train PINQI; return the path of the last checkpoint.

    Parameters
    ----------
    config
        The experiment.
    out
        Run folder: ``config.yaml``, ``checkpoints/`` (every ``checkpoint_every_n_steps`` and
        ``last.ckpt``; each holds the training time and devices so far,
        :func:`pinqi.training.clock.training_clock`) and ``logs/metrics.csv`` (losses, solver
        diagnostics, validation metrics, learning rates; one file across resumes).
    resume
        A checkpoint to continue from, or ``"auto"`` for ``out/checkpoints/last.ckpt`` if it
        exists (else a fresh start, said so). An interrupted run loses at most one checkpoint
        interval.
    init
        Start a new run from the weights and strengths of this checkpoint, exported model or
        shipped model name (fine-tuning, e.g. with another loss or protocol; set
        ``optim.pretrain_epochs=0`` to skip the pretraining). Ignored when a checkpoint is
        resumed: the run's own weights win.

    With ``optim.cpu_processes`` > 1 on the CPU the training runs in that many spawned
    processes (a calling script needs the ``if __name__ == "__main__":`` guard).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = _resume_checkpoint(out, resume)
    processes = config.optim.processes_on_cpu
    if processes > 1:
        print(
            f"training in {processes} processes on this CPU, {config.optim.process_batch_size} "
            f"of every step's {config.optim.batch_size} samples each (optim.cpu_processes)"
        )
    logger = ContinuousCSVLogger(out, name="logs", version="")
    if checkpoint is None:
        Path(logger.log_dir, "metrics.csv").unlink(missing_ok=True)
    else:
        state = read_checkpoint(checkpoint)
        # the log counts batches, skipped ones included; global_step counts updates only
        batches = int(state["global_step"]) + int(state.get("skipped_steps", 0))
        _truncate_log(Path(logger.log_dir) / "metrics.csv", batches)
    config.to_yaml(out / "config.yaml")
    L.seed_everything(config.seed, workers=True)
    optim = config.optim
    checkpoints = ModelCheckpoint(
        dirpath=out / "checkpoints",
        every_n_train_steps=optim.checkpoint_every_n_steps,
        save_last=True,
        save_top_k=-1,
        enable_version_counter=False,  # a resumed run moved here rewrites its last.ckpt
    )
    devices, strategy = _placement(optim)
    trainer = L.Trainer(
        default_root_dir=out,
        max_epochs=optim.max_epochs,
        max_steps=optim.max_steps,
        accelerator=optim.accelerator,
        devices=devices,
        num_nodes=optim.num_nodes,
        strategy=strategy,
        precision=optim.precision,
        callbacks=[checkpoints, LearningRateMonitor("step"), TrainingClock()],
        logger=logger,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        # the EpochSampler splits epochs between DDP processes itself (resumable, and W
        # processes of batch b see the batches of one process of batch b W)
        use_distributed_sampler=False,
    )
    task = PINQITask(config.to_dict())
    if init is not None and checkpoint is None:
        _initialise(task, init)
    trainer.fit(task, SimulatedDataModule(config), ckpt_path=checkpoint)
    # the run's own last.ckpt, not the callback's record of it: a finished run copied from
    # another machine resumes without training, and the callback drops the foreign path
    last = out / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise RuntimeError(f"training ended without writing a checkpoint in {last.parent}")
    return last
