"""Experiment configuration: one dataclass, overridable from YAML presets in ``configs/``.

A neutral module: training, checkpoint loading and the command line all read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from pinqi.data.simulation import SimulationConfig
from pinqi.nets.method_config import MethodConfig
from pinqi.nets.pinqi import PINQIConfig


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation and run settings (paper Sec. 3.2).

    Attributes
    ----------
    batch_size, max_epochs, samples_per_epoch, max_steps
        The run length; it stops at whichever of max_epochs and max_steps comes first.
    val_samples
        Size of the fixed validation set (simulated from the validation subjects).
    lr_networks, lr_lambdas, weight_decay, warmup_steps, min_lr_factor
        AdamW with linear warm-up, then cosine decay to ``min_lr_factor`` x lr, separately in
        the pretraining and in the end-to-end phase. Weight decay acts on the convolution and
        linear weights only (not on biases, norms, ReZero alphas or the strengths).
    pretrain_epochs
        Epochs of P_theta pretraining on interpolations between zero-filled and true images
        (``pretrain_epochs x samples_per_epoch / batch_size`` optimisation steps).
    deep_supervision
        Loss weight of every earlier iterate.
    outside_weight
        Loss weight of pixels outside the brain mask (inside: 1).
    t1_weight_power
        The R1 error is weighted by (T1_true / 1 s) ** this in every loss (0: the paper's MSE
        on R1; 4: the squared T1 error to first order). See
        :func:`pinqi.training.losses.parameter_loss`.
    t1_weight_max
        With ``t1_weight_power``, T1_true in the weight is clamped to at most this (s; 0: no
        clamp).
    gradient_clip_norm
        Gradients are scaled down to at most this total norm before each step.
    max_nonfinite_steps
        A step whose loss or gradient is not finite is skipped (no update) and counted; this
        many skipped steps in a row stop the run with an error.
    checkpoint_every_n_steps
        Checkpoint interval (``last.ckpt`` is always kept).
    strip_rows
        Train on readout strips of this many rows (0: whole images); validation always uses
        whole images. See :mod:`pinqi.data.strips`.
    num_workers, accelerator, devices, num_nodes, strategy, precision
        Passed to the DataLoader and to Lightning's Trainer. With ``devices`` > 1 (DDP),
        ``batch_size`` is per process.
    cpu_processes
        With ``accelerator: cpu``: split every step's ``batch_size`` samples among this many
        data-parallel processes on this machine (DDP, gloo), each with its share of the cores.
        On 2 cores, 2 processes of 1 thread run a PINQI step ~1.2x faster than one process of
        2 threads (docs/benchmarks.md); the updates are one process's, up to rounding. Only where it
        runs changes: ignored on other accelerators; not combined with ``devices`` > 1.
    """

    batch_size: int = 16
    max_epochs: int = 80
    samples_per_epoch: int = 2000
    max_steps: int = -1
    val_samples: int = 32
    lr_networks: float = 4e-3
    lr_lambdas: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 1500
    min_lr_factor: float = 0.025
    pretrain_epochs: int = 1
    deep_supervision: float = 0.05
    outside_weight: float = 0.01
    t1_weight_power: float = 0.0
    t1_weight_max: float = 0.0
    gradient_clip_norm: float = 1.0
    max_nonfinite_steps: int = 10
    checkpoint_every_n_steps: int = 200
    strip_rows: int = 0
    num_workers: int = 4
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    cpu_processes: int = 1

    def __post_init__(self) -> None:
        processes = self.cpu_processes
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"optim.cpu_processes must be a positive integer, got {processes!r}")
        if self.processes_on_cpu > 1:
            if self.batch_size % processes:
                raise ValueError(
                    f"optim.batch_size {self.batch_size} must be a multiple of "
                    f"optim.cpu_processes {processes}: every process takes an equal share"
                )
            if self.devices not in (1, "auto") or self.num_nodes != 1 or self.strategy != "auto":
                raise ValueError(
                    "optim.cpu_processes starts its own data-parallel processes: leave "
                    "optim.devices, num_nodes and strategy at 1/auto with it (or use devices "
                    "alone, with batch_size per process)"
                )

    @property
    def processes_on_cpu(self) -> int:
        """Processes that share every step's samples: ``cpu_processes`` on the CPU, else 1."""
        return self.cpu_processes if self.accelerator == "cpu" else 1

    @property
    def process_batch_size(self) -> int:
        """Samples per step of each training process (Lightning's per-process batch)."""
        return self.batch_size // self.processes_on_cpu


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a training run."""

    name: str = "pinqi"
    seed: int = 0
    data: SimulationConfig = field(default_factory=SimulationConfig)
    model: PINQIConfig = field(default_factory=PINQIConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    method: MethodConfig = field(default_factory=MethodConfig)

    def to_dict(self) -> dict:
        """Plain dict (YAML/JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ExperimentConfig:
        """Build from a (possibly partial) nested dict; unknown keys raise."""
        if not isinstance(values, dict):
            raise ValueError(
                f"a config is a mapping of sections (data:, model:, optim:, method:) and "
                f"top-level keys, got {type(values).__name__} {values!r:.60}"
            )
        values = dict(values)
        sections = {
            "data": SimulationConfig,
            "model": PINQIConfig,
            "optim": OptimConfig,
            "method": MethodConfig,
        }
        for name, section in sections.items():
            value = values.get(name, {})
            if not isinstance(value, dict | section):
                raise ValueError(
                    f"config section {name!r} must be a mapping of keys, got {value!r:.60}"
                )
            values[name] = build_dataclass(section, value, name)
        return build_dataclass(cls, values, "config")

    @classmethod
    def from_yaml(cls, path: str | Path) -> ExperimentConfig:
        """Read a YAML preset."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return cls.from_dict(parse_yaml(path.read_text(), str(path)) or {})

    def with_overrides(self, overrides: Sequence[str]) -> ExperimentConfig:
        """A copy with ``section.key=value`` overrides applied, values parsed as YAML.

        E.g. ``["data.tau=[0.05, 0.4, 1.1, 2.5]", "data.signal_model=inversion-ab"]``. The
        result is validated like a preset: unknown sections or keys raise.
        """
        values = self.to_dict()
        for item in overrides:
            path, sep, text = item.partition("=")
            keys = path.strip().split(".")
            if not sep or not all(keys):
                raise ValueError(f"override {item!r} must look like section.key=value")
            target = values
            for key in keys[:-1]:
                if not isinstance(target.get(key), dict):
                    raise ValueError(f"override {item!r}: {key!r} is not a config section")
                target = target[key]
            if keys[-1] not in target:
                raise ValueError(f"override {item!r}: unknown key; known: {sorted(target)}")
            target[keys[-1]] = parse_yaml(text, f"override {item!r}")
        return ExperimentConfig.from_dict(values)

    def to_yaml(self, path: str | Path) -> None:
        """Write the complete configuration as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def parse_yaml(text: str, source: str) -> object:
    """``text`` parsed as YAML; invalid YAML raises one line naming ``source`` and the place.

    ``source`` is what the text came from, e.g. a file path or ``"override 'a.b=[1'"``.
    """
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ValueError(f"{source} is not valid YAML ({problem}{where})") from None


def build_dataclass(cls: type, values: dict | object, where: str) -> object:
    """``cls(**values)`` with lists turned into tuples; unknown keys raise, named with ``where``."""
    if not isinstance(values, dict):
        return values
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown keys in {where}: {unknown}; known: {sorted(known)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**converted)
