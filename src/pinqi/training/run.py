"""``pinqi train``: a resumable Lightning run with checkpoints and CSV logs."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from pinqi.solvers import ConvergenceWarning
from pinqi.training.config import ExperimentConfig
from pinqi.training.module import PINQITask, SimulatedDataModule


def train(config: ExperimentConfig, out: str | Path, resume: str | Path | None = None) -> Path:
    """Train PINQI; return the path of the last checkpoint.

    Parameters
    ----------
    config
        The experiment.
    out
        Run folder: ``config.yaml``, ``checkpoints/`` (every ``checkpoint_every_n_steps`` and
        ``last.ckpt``) and ``logs/`` (CSV: losses, validation metrics, learning rates).
    resume
        A checkpoint to continue from, or ``"auto"`` for ``out/checkpoints/last.ckpt`` if it
        exists. An interrupted run loses at most one checkpoint interval.
    """
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config.to_yaml(out / "config.yaml")
    L.seed_everything(config.seed, workers=True)
    optim = config.optim
    checkpoints = ModelCheckpoint(
        dirpath=out / "checkpoints",
        every_n_train_steps=optim.checkpoint_every_n_steps,
        save_last=True,
        save_top_k=-1,
    )
    trainer = L.Trainer(
        default_root_dir=out,
        max_epochs=optim.max_epochs,
        max_steps=optim.max_steps,
        accelerator=optim.accelerator,
        devices=optim.devices,
        num_nodes=optim.num_nodes,
        strategy=optim.strategy,
        precision=optim.precision,
        gradient_clip_val=1.0,
        callbacks=[checkpoints, LearningRateMonitor("step")],
        logger=CSVLogger(out, name="logs", version=""),
        log_every_n_steps=1,
        num_sanity_val_steps=0,
    )
    if str(resume) == "auto":
        last = out / "checkpoints" / "last.ckpt"
        resume = last if last.is_file() else None
    trainer.fit(PINQITask(config.to_dict()), SimulatedDataModule(config), ckpt_path=resume)
    return Path(checkpoints.last_model_path)
