"""Lightning module and data module that train PINQI end to end on simulated data."""

from __future__ import annotations

import warnings

import lightning as L
import torch

from pinqi.data.datasets import SimulatedDataset
from pinqi.evaluation.metrics import parameter_metrics
from pinqi.nets.pinqi import PINQI, PINQIOutput
from pinqi.physics import CartesianAcquisition, signal_model
from pinqi.solvers import ConvergenceWarning
from pinqi.training.config import ExperimentConfig
from pinqi.training.losses import parameter_loss, pinqi_loss
from pinqi.training.schedule import warmup_cosine


def build_model(config: ExperimentConfig) -> PINQI:
    """The PINQI network of a configuration (its signal model at the configured delays)."""
    return PINQI(
        signal_model(config.data.signal_model, torch.tensor(config.data.tau)), config.model
    )


class SimulatedDataModule(L.LightningDataModule):
    """Fresh training samples every epoch and a fixed validation set, both simulated."""

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__()
        self.config = config
        optim = config.optim
        self.train_set = SimulatedDataset(
            config.data, "train", optim.samples_per_epoch, config.seed
        )
        self.val_set = SimulatedDataset(config.data, "val", optim.val_samples, config.seed)

    def _loader(self, dataset: SimulatedDataset, shuffle: bool) -> torch.utils.data.DataLoader:
        workers = self.config.optim.num_workers
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=self.config.optim.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=False,
            drop_last=shuffle,
        )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        """Training batches (a new draw every epoch, see ``on_train_epoch_start``)."""
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        """The fixed validation batches."""
        return self._loader(self.val_set, shuffle=False)


class PINQITask(L.LightningModule):
    """Training of PINQI: P_theta pretraining, then end-to-end training with deep supervision.

    Parameters
    ----------
    config
        The experiment configuration as a plain dict (stored in every checkpoint).
    """

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.config = ExperimentConfig.from_dict(config)
        self.model = build_model(self.config)

    def on_fit_start(self) -> None:
        """PINQI runs its solvers for fixed iteration counts, as the paper: no warnings."""
        warnings.filterwarnings("ignore", category=ConvergenceWarning)

    def on_train_epoch_start(self) -> None:
        """Draw new training samples every epoch."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:
            datamodule.train_set.set_epoch(self.current_epoch)

    def _pretraining(self) -> bool:
        return self.current_epoch < self.config.optim.pretrain_epochs

    def pretraining_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """P_theta on random interpolations between zero-filled and true images (Sec. 3.2)."""
        model = self.model
        acquisition = CartesianAcquisition(batch["coil_maps"], batch["mask"])
        zero_filled = acquisition.adjoint(batch["kspace"])
        true_images = model.model(batch["params"])
        weight = torch.rand(len(zero_filled), 1, 1, 1, device=zero_filled.device)
        images = weight * true_images + (1 - weight) * zero_filled
        iteration = int(torch.randint(model.config.iterations + 1, ()))
        prediction = model.predict_parameters(images, iteration)
        return parameter_loss(
            prediction, batch["params"], batch["brain_mask"], self.config.optim.outside_weight
        )

    def _reconstruct(self, batch: dict[str, torch.Tensor]) -> PINQIOutput:
        return self.model(batch["kspace"], batch["coil_maps"], batch["mask"])

    def _loss(self, batch: dict[str, torch.Tensor], output: PINQIOutput) -> torch.Tensor:
        optim = self.config.optim
        return pinqi_loss(
            output,
            batch["params"],
            batch["brain_mask"],
            optim.deep_supervision,
            optim.outside_weight,
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One optimisation step; logs ``train_loss``."""
        if self._pretraining():
            loss = self.pretraining_loss(batch)
        else:
            loss = self._loss(batch, self._reconstruct(batch))
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["params"]))
        self.log("pretraining", float(self._pretraining()), batch_size=len(batch["params"]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Validation loss and T1/M0 metrics inside the brain mask."""
        output = self._reconstruct(batch)
        size = len(batch["params"])
        self.log(
            "val_loss", self._loss(batch, output), prog_bar=True, batch_size=size, sync_dist=True
        )
        metrics = parameter_metrics(output.parameters[-1], batch["params"], batch["brain_mask"])
        for name, values in metrics.items():
            self.log(
                f"val_{name}",
                values.mean(),
                batch_size=size,
                sync_dist=True,
                prog_bar=name == "t1_nrmse",
            )

    def total_steps(self) -> int:
        """Optimisation steps of the whole run (for the schedule)."""
        optim = self.config.optim
        per_epoch = max(1, optim.samples_per_epoch // optim.batch_size)
        if self.trainer is not None and self.trainer.world_size > 1:
            per_epoch = max(1, per_epoch // self.trainer.world_size)
        steps = optim.max_epochs * per_epoch
        return min(steps, optim.max_steps) if optim.max_steps > 0 else steps

    def configure_optimizers(self) -> dict:
        """AdamW (networks and strengths as separate groups), warm-up + cosine per step."""
        optim = self.config.optim
        strengths = [p for n, p in self.model.named_parameters() if n.startswith("raw_lambda")]
        networks = [p for n, p in self.model.named_parameters() if not n.startswith("raw_lambda")]
        optimizer = torch.optim.AdamW(
            [
                {"params": networks, "lr": optim.lr_networks},
                {"params": strengths, "lr": optim.lr_lambdas},
            ],
            weight_decay=optim.weight_decay,
        )
        total = self.total_steps()
        warmup = min(optim.warmup_steps, max(1, total // 10))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup, total, optim.min_lr_factor)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
