"""Lightning module and data module that train PINQI (or a reference method) on simulated data."""

from __future__ import annotations

import os
from collections.abc import Callable

import lightning as L
import torch
from torch import nn

from pinqi.config import ExperimentConfig, OptimConfig
from pinqi.data.datasets import EpochIndexedDataset, EpochSampler, SimulatedDataset
from pinqi.metrics import parameter_metrics
from pinqi.nets.methods import build_network
from pinqi.nets.pinqi import PINQIOutput
from pinqi.training.checkpoints import samples_trained
from pinqi.training.objectives import pretraining_loss, step_generator, training_loss
from pinqi.training.schedule import phase_schedule


class ResumableLoader(torch.utils.data.DataLoader):
    """A DataLoader over an :class:`EpochSampler` whose place in the epoch is checkpointed.

    Lightning stores :meth:`state_dict` in every checkpoint and hands it back through
    :meth:`load_state_dict` on resuming, so a run resumed mid-epoch goes on with the samples
    of that epoch it has not seen instead of starting the epoch over.

    Parameters
    ----------
    position
        ``() -> (epoch, batches)``: the epoch being trained and the batches of it done, as
        the trainer counts them (the loader itself runs ahead of the trainer by its prefetch).
    """

    def __init__(self, *args, position: Callable[[], tuple[int, int]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.position = position

    def state_dict(self) -> dict[str, int]:
        """The epoch and the batches of it done."""
        epoch, batches = self.position()
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Skip the batches of ``state["epoch"]`` already done (a finished epoch: nothing).

        Every process skips the batches of its own share (:meth:`EpochSampler.distribute`).
        """
        if isinstance(self.sampler, EpochSampler) and state["batches"] < len(self):
            self.sampler.resume(state["epoch"], state["batches"] * self.batch_size)


class SimulatedDataModule(L.LightningDataModule):
    """Fresh training samples every epoch and a fixed validation set, both simulated.

    The validation set is simulated without the coverage options of the data configuration
    (:meth:`~pinqi.data.simulation.SimulationConfig.without_coverage`): settings are chosen
    on the data the model is for.

    The anatomy is loaded once, before DataLoader workers fork (they share it), and workers
    stay alive across epochs; the epoch reaches them through the sampler's indices.
    """

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__()
        self.config = config
        optim = config.optim
        self.train_set = SimulatedDataset(
            config.data, "train", optim.samples_per_epoch, config.seed, strip_rows=optim.strip_rows
        )
        # validation on the target data: the coverage options widen the training draws only
        self.val_set = SimulatedDataset(
            config.data.without_coverage(), "val", optim.val_samples, config.seed
        )
        self.train_sampler = EpochSampler(optim.samples_per_epoch, config.seed)

    def setup(self, stage: str) -> None:
        """Load the anatomy of both splits (once; later calls find it loaded).

        Under DDP each process draws its own share of every epoch
        (:meth:`~pinqi.data.datasets.EpochSampler.distribute`; the trainer adds no sampler of
        its own), so that W processes with batch b train like one with batch b W, and a
        resumed run goes on mid-epoch in every process.
        """
        self.train_set.preload()
        self.val_set.preload()
        if self.trainer is not None:
            self.train_sampler.distribute(self.trainer.global_rank, self.trainer.world_size)

    def _options(self) -> dict:
        workers = self.config.optim.num_workers
        return {
            "batch_size": self.config.optim.process_batch_size,
            "num_workers": workers,
            "persistent_workers": workers > 0,
        }

    def _position(self) -> tuple[int, int]:
        """The epoch being trained and the training batches of it done."""
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return self.trainer.current_epoch, progress.processed

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        """Training batches, new samples every epoch (:class:`EpochSampler`), resumable."""
        return ResumableLoader(
            EpochIndexedDataset(self.train_set),
            sampler=self.train_sampler,
            drop_last=True,
            position=self._position,
            **self._options(),
        )

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        """The fixed validation batches."""
        return torch.utils.data.DataLoader(self.val_set, shuffle=False, **self._options())


#: Names of the learned scalars of an unrolled scheme (the strengths lambda of PINQI, DeepT1
#: and the unrolled ablations; DOPAMINE's lambda and step sizes mu): one optimizer group.
STRENGTH_PREFIXES = ("raw_lambda", "raw_mu")


def optimizer_groups(model: nn.Module, optim: OptimConfig) -> list[dict]:
    """AdamW parameter groups: decayed weights, undecayed rest, and the strengths.

    Weight decay acts on the weights of convolutions and linear layers only; biases, norm
    parameters, ReZero alphas and the raw strengths (:data:`STRENGTH_PREFIXES`: the lambdas,
    DOPAMINE's step sizes mu) are not decayed, so no strength is pulled towards a fixed value.
    The strengths have their own learning rate.
    """
    decayed = {
        id(module.weight)
        for module in model.modules()
        if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear))
    }
    groups: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": [], "strengths": []}
    for name, parameter in model.named_parameters():
        if name.startswith(STRENGTH_PREFIXES):
            groups["strengths"].append(parameter)
        elif id(parameter) in decayed:
            groups["decay"].append(parameter)
        else:
            groups["no_decay"].append(parameter)
    return [
        {"params": groups["decay"], "lr": optim.lr_networks, "weight_decay": optim.weight_decay},
        {"params": groups["no_decay"], "lr": optim.lr_networks, "weight_decay": 0.0},
        {"params": groups["strengths"], "lr": optim.lr_lambdas, "weight_decay": 0.0},
    ]


def share_cpu_cores(processes: int) -> int:
    """Set this process's threads to its share of the CPU cores among ``processes``.

    Parameters
    ----------
    processes
        Training processes running on this machine at once.

    Returns
    -------
    int
        The number of threads this process now runs (unchanged where ``OMP_NUM_THREADS`` is
        set: the user's choice).
    """
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, _available_cores() // processes))
    return torch.get_num_threads()


def _available_cores() -> int:
    """The cores this process may run on (all of the machine's where the OS cannot say)."""
    if hasattr(os, "sched_getaffinity"):  # Linux
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class NonFiniteTrainingError(RuntimeError):
    """Too many training steps in a row had a non-finite loss or gradient."""


class PINQITask(L.LightningModule):
    """Training of PINQI or a reference method: a pretraining phase, then the main phase.

    The network comes from the ``method`` section (:func:`~pinqi.nets.methods.build_network`)
    and its losses from :mod:`pinqi.training.objectives` (PINQI: P_theta pretraining, then
    end-to-end training with deep supervision).

    Optimisation is manual, so that a step whose loss or gradient is not finite can be
    skipped without touching the weights or the optimiser state; skipped steps are counted,
    logged and saved in checkpoints, and ``optim.max_nonfinite_steps`` of them in a row stop
    the run with :class:`NonFiniteTrainingError`. Each phase has its own warm-up and cosine
    decay (:func:`~pinqi.training.schedule.phase_schedule`).

    Parameters
    ----------
    config
        The experiment configuration as a plain dict (stored in every checkpoint).
    """

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.save_hyperparameters({"config": config})
        self.config = ExperimentConfig.from_dict(config)
        config = self.config
        self.model = build_network(
            config.method, config.model, config.data.signal_model, config.data.tau
        )
        self.skipped_steps = 0
        self.skipped_in_a_row = 0
        self.samples_trained = 0

    def setup(self, stage: str) -> None:
        """Share the CPU cores between the training processes of this machine.

        PyTorch gives every process as many threads as the machine has cores; W processes of
        one CPU run (``optim.cpu_processes``, or DDP with ``devices: W``) would then run W times
        as many threads as cores. Each gets its share instead (cores // W, at least 1), unless
        ``OMP_NUM_THREADS`` is set.
        """
        processes = self.trainer.num_devices
        if self.trainer.strategy.root_device.type == "cpu" and processes > 1:
            share_cpu_cores(processes)

    def steps_per_epoch(self) -> int:
        """Optimisation steps per epoch: its samples over those of one step of all processes.

        The processes are the trainer's (DDP) or, before training starts, those that
        ``optim.cpu_processes`` will start; each takes ``optim.process_batch_size`` samples.
        """
        optim = self.config.optim
        processes = optim.processes_on_cpu
        if self._trainer is not None:
            processes = self.trainer.world_size
        return max(1, optim.samples_per_epoch // (optim.process_batch_size * processes))

    def pretraining_steps(self) -> int:
        """Optimisation steps of the P_theta pretraining phase."""
        return self.config.optim.pretrain_epochs * self.steps_per_epoch()

    def total_steps(self) -> int:
        """Optimisation steps of the whole run (both phases)."""
        optim = self.config.optim
        steps = optim.max_epochs * self.steps_per_epoch()
        return min(steps, optim.max_steps) if optim.max_steps > 0 else steps

    def _pretraining(self) -> bool:
        return self.global_step < self.pretraining_steps()

    def pretraining_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The method's pretraining loss (:mod:`pinqi.training.objectives`)."""
        generator = step_generator(self.config.seed, self.global_step)
        return pretraining_loss(self.model, batch, self.config.optim, generator)

    def _reconstruct(self, batch: dict[str, torch.Tensor]) -> PINQIOutput:
        return self.model(batch["kspace"], batch["coil_maps"], batch["mask"])

    def _loss(self, batch: dict[str, torch.Tensor], output: PINQIOutput) -> torch.Tensor:
        return training_loss(self.model, batch, output, self.config.optim)

    def _log_solvers(self, output: PINQIOutput, size: int) -> None:
        """The worst CG relative residual and the share of unconverged fit pixels."""
        if output.cg_infos:
            residual = torch.stack([info.residual.amax() for info in output.cg_infos]).amax()
            self.log("cg_residual", residual, batch_size=size)
        if output.fit_infos:
            share = torch.stack([info.unconverged_share for info in output.fit_infos]).mean()
            self.log("fit_unconverged", share, batch_size=size)

    def _skip(self, what: str, size: int) -> None:
        """Count a step without an update; raise after too many in a row."""
        self.skipped_steps += 1
        self.skipped_in_a_row += 1
        self.log("skipped_steps", float(self.skipped_steps), batch_size=size)
        # NaN, or the log would repeat the last good step's values in this row
        self._log_step(float("nan"), float("nan"), size)
        limit = self.config.optim.max_nonfinite_steps
        if self.skipped_in_a_row >= limit:
            raise NonFiniteTrainingError(
                f"{self.skipped_in_a_row} training steps in a row had a non-finite {what} "
                f"(limit optim.max_nonfinite_steps = {limit}); last good weights are in the "
                "last checkpoint. Check the data and lower the learning rate."
            )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """One optimisation step, skipped when the loss or the gradient is not finite."""
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        size = len(batch["params"])
        pretraining = self._pretraining()
        if pretraining:
            loss = self.pretraining_loss(batch)
        else:
            output = self._reconstruct(batch)
            loss = self._loss(batch, output)
            self._log_solvers(output, size)
        self.log("pretraining", float(pretraining), batch_size=size)
        # all ranks skip together, or DDP's gradient all-reduce would wait for a skipped rank;
        # the gradient norm below is the same on every rank (gradients are all-reduced)
        finite = bool(torch.isfinite(loss))
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            self._skip("loss", size)
            return
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), self.config.optim.gradient_clip_norm
        )
        if not bool(torch.isfinite(norm)):
            optimizer.zero_grad(set_to_none=True)
            self._skip("gradient", size)
            return
        optimizer.step()
        scheduler.step()
        self.skipped_in_a_row = 0
        self.samples_trained += size * self.trainer.world_size
        self._log_step(loss.detach(), norm, size)

    def _log_step(
        self, loss: torch.Tensor | float, grad_norm: torch.Tensor | float, size: int
    ) -> None:
        # averaged over the processes under DDP: the loss of the whole (global) batch
        self.log("train_loss", loss, prog_bar=True, batch_size=size, sync_dist=True)
        self.log("grad_norm", grad_norm, batch_size=size)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Validation loss and T1/M0 metrics inside the brain mask."""
        output = self._reconstruct(batch)
        size = len(batch["params"])
        self.log(
            "val_loss", self._loss(batch, output), prog_bar=True, batch_size=size, sync_dist=True
        )
        metrics = parameter_metrics(
            output.parameters[-1], batch["params"], batch["brain_mask"], batch.get("tissue")
        )
        for name, values in metrics.items():
            # the mean over the samples that have the region (e.g. CSF), weighted by their count
            present = int((~torch.isnan(values)).sum())
            if not present:
                continue
            self.log(
                f"val_{name}",
                values.nansum() / present,
                batch_size=present,
                sync_dist=True,
                prog_bar=name == "t1_nrmse",
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep the counts of skipped steps and of samples trained on across resumes."""
        checkpoint["skipped_steps"] = self.skipped_steps
        checkpoint["samples_trained"] = self.samples_trained

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore the counts (samples: steps x batch for checkpoints from before the count)."""
        self.skipped_steps = int(checkpoint.get("skipped_steps", 0))
        self.samples_trained = samples_trained(checkpoint, self.config.optim.batch_size)

    def configure_optimizers(self) -> dict:
        """AdamW (see :func:`optimizer_groups`) with a warm-up + cosine schedule per phase."""
        optim = self.config.optim
        optimizer = torch.optim.AdamW(optimizer_groups(self.model, optim))
        pretraining, total = self.pretraining_steps(), self.total_steps()
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: phase_schedule(
                step, pretraining, total, optim.warmup_steps, optim.min_lr_factor
            ),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
