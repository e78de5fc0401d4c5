"""Training time and devices, kept in every checkpoint so that they survive stops and moves."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch

from pinqi.training.checkpoints import read_checkpoint


def device_name(device: torch.device) -> str:
    """A readable name of ``device``: the GPU's model, or the CPU and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type.upper()} ({torch.get_num_threads()} threads)"


class TrainingClock(L.Callback):
    """Wall-clock seconds spent training and the devices that did it, across resumes.

    Its state goes into every checkpoint (Lightning saves callback states), so a run stopped
    and resumed, or started on a GPU and finished on a CPU, reports its whole training time up
    to its last checkpoint; only the time after that checkpoint is lost with a stop.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.devices: list[str] = []
        self._started: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start counting; note the device (and the processes, e.g. "2 x CPU (1 threads)")."""
        self._started = time.perf_counter()
        name = device_name(pl_module.device)
        if trainer.world_size > 1:
            name = f"{trainer.world_size} x {name}"
        if name not in self.devices:
            self.devices.append(name)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Stop counting."""
        self.seconds = self._elapsed()
        self._started = None

    def _elapsed(self) -> float:
        running = 0.0 if self._started is None else time.perf_counter() - self._started
        return self.seconds + running

    def state_dict(self) -> dict:
        """Seconds so far (the running part included) and the devices."""
        return {"seconds": self._elapsed(), "devices": list(self.devices)}

    def load_state_dict(self, state_dict: dict) -> None:
        """Continue the count of a resumed run."""
        self.seconds = float(state_dict["seconds"])
        self.devices = list(state_dict["devices"])


def training_clock(checkpoint: str | Path) -> dict | None:
    """``{"seconds", "devices"}`` recorded in a Lightning checkpoint (None: not recorded)."""
    state = read_checkpoint(checkpoint)
    return state.get("callbacks", {}).get(TrainingClock.__qualname__)
