"""Loading trained PINQI models from Lightning checkpoints or exported model files."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from pinqi.config import ExperimentConfig
from pinqi.nets.methods import build_network

#: The name of the default shipped model for ``--checkpoint``.
DEFAULT_MODEL = "default"

#: Models shipped with the package: ``--checkpoint NAME`` -> file in ``pinqi/weights``.
#: ``default`` (= ``brainweb-long``) is ``configs/brainweb-long.yaml``: the BrainWeb preset on
#: the paper's data trained for 40,000 samples (10,000 steps of batch 4 on 2 CPU cores);
#: ``gpu-brainweb`` (the default before) is the same network trained with batch 16 for 400
#: steps on a GPU (6,400 samples); ``cpu-brainweb`` the same at 600 steps of batch 4 (the
#: ``pinqi`` row of ``configs/compare/cpu.yaml``); ``cpu-phantom`` is trained with
#: ``configs/cpu.yaml`` on the built-in phantom only. Each file has a model card
#: ``<file>.json`` (docs/results.md).
SHIPPED_MODELS = {
    DEFAULT_MODEL: "pinqi-brainweb-long.pt",
    "brainweb-long": "pinqi-brainweb-long.pt",
    "gpu-brainweb": "pinqi-gpu-brainweb.pt",
    "cpu-brainweb": "pinqi-cpu-brainweb.pt",
    "cpu-phantom": "pinqi-cpu.pt",
}


def shipped_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of a shipped model file (:data:`SHIPPED_MODELS`)."""
    return Path(str(resources.files("pinqi") / "weights" / SHIPPED_MODELS[name]))


def default_model_path() -> Path:
    """Path of the default shipped model file."""
    return shipped_model_path(DEFAULT_MODEL)


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> dict:
    """The contents of a checkpoint or exported model file, read without running its code.

    Tensors, containers and plain values only (``torch.load(..., weights_only=True)``): a
    file from elsewhere cannot execute code when it is read. Any file that is not such a
    dictionary (corrupt, truncated, another format, other objects) raises ``ValueError`` with
    one line naming it.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch.load fails on foreign bytes with many error types
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"{path} is not a readable checkpoint ({type(error).__name__}: {first[:120]}); "
            "give a .ckpt of pinqi train, a file of pinqi export or a shipped model name"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is neither a pinqi Lightning checkpoint nor an exported model")
    return state


def load_model(
    checkpoint: str | Path, map_location: str = "cpu"
) -> tuple[nn.Module, ExperimentConfig]:
    """A trained network (PINQI or a reference method) in eval mode and its configuration.

    Parameters
    ----------
    checkpoint
        A Lightning checkpoint (``.ckpt``) written by ``pinqi train``, a model file written by
        :func:`export_model`, or the name of a shipped model (:data:`SHIPPED_MODELS`:
        ``"default"``, ``"cpu-brainweb"``, ``"cpu-phantom"``).
    map_location
        Device to load onto.
    """
    name = str(checkpoint)
    path = shipped_model_path(name) if name in SHIPPED_MODELS else Path(checkpoint)
    if not path.is_file():
        if not path.suffix and len(path.parts) == 1:  # a name, not a path
            raise FileNotFoundError(
                f"no shipped model or file {name!r}; shipped models: "
                f"{', '.join(SHIPPED_MODELS)}; or give the path of a checkpoint"
            )
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = read_checkpoint(path, map_location)
    if "hyper_parameters" in state:  # Lightning checkpoint
        config = ExperimentConfig.from_dict(state["hyper_parameters"]["config"])
        weights = {
            k.removeprefix("model."): v
            for k, v in state["state_dict"].items()
            if k.startswith("model.")
        }
    elif "config" in state and "state_dict" in state:
        config = ExperimentConfig.from_dict(state["config"])
        weights = state["state_dict"]
    else:
        raise ValueError(f"{path} is neither a pinqi Lightning checkpoint nor an exported model")
    model = build_network(config.method, config.model, config.data.signal_model, config.data.tau)
    model.load_state_dict(weights)
    return model.eval(), config


def package_commit() -> str | None:
    """The git commit of the installed pinqi package itself, or None where it is not known.

    Asks git in the package's own source folder (not the current folder), and only trusts the
    answer when that folder belongs to a checkout of pinqi (its top level holds pinqi's
    ``pyproject.toml`` and ``src/pinqi``); a ``+dirty`` suffix marks uncommitted changes.
    """
    import subprocess

    package = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(
                ["git", "-C", str(package), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or package != (Path(top) / "src" / "pinqi").resolve():
        return None
    pyproject = Path(top) / "pyproject.toml"
    if not pyproject.is_file() or 'name = "pinqi"' not in pyproject.read_text():
        return None
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src")
    return commit + ("+dirty" if dirty else "")


def samples_trained(checkpoint: dict, batch_size: int) -> int:
    """Training samples of all processes up to a Lightning ``checkpoint`` (a loaded dict).

    Checkpoints written before the count was kept hold only the steps: steps x ``batch_size``
    (exact for runs of one process).
    """
    if "samples_trained" in checkpoint:
        return int(checkpoint["samples_trained"])
    return int(checkpoint.get("global_step", 0)) * batch_size


def model_card(checkpoint: str | Path, notes: str = "") -> dict:
    """What a shipped model needs to be reproducible: data, config, seed, steps, commit, metrics.

    The last validation metrics are read from the run's ``logs/metrics.csv`` when present.
    ``training_samples`` counts the samples of every process (pretraining included; steps x
    batch for checkpoints written before the count); ``training_minutes`` (wall clock, across
    resumes) and ``devices`` come from the checkpoint's
    :class:`~pinqi.training.clock.TrainingClock` (None and empty for checkpoints written
    before it existed).
    """
    import csv
    from datetime import datetime, timezone

    from pinqi import __version__

    if str(checkpoint) in SHIPPED_MODELS:
        raise ValueError(
            f"'{checkpoint}' is a shipped model, exported already (its card: "
            f"{shipped_model_path(str(checkpoint)).with_suffix('.json')}); export needs a "
            "Lightning checkpoint of pinqi train, e.g. RUN/checkpoints/last.ckpt"
        )
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    state = read_checkpoint(checkpoint)
    if "hyper_parameters" not in state:
        raise ValueError(
            f"{checkpoint} is not a training checkpoint (an exported model file?); export "
            "needs a Lightning checkpoint of pinqi train, e.g. RUN/checkpoints/last.ckpt"
        )
    config = ExperimentConfig.from_dict(state["hyper_parameters"]["config"])
    commit = package_commit()
    # pinqi.training.clock.TrainingClock's state (read without importing Lightning)
    clock = state.get("callbacks", {}).get("TrainingClock")
    validation = {}
    log = checkpoint.parent.parent / "logs" / "metrics.csv"
    if log.is_file():
        rows = [r for r in csv.DictReader(open(log)) if r.get("val_t1_nrmse")]
        if rows:
            validation = {
                k: float(v) for k, v in rows[-1].items() if k.startswith("val_") and v
            } | {"step": int(rows[-1]["step"])}
    return {
        "name": config.name,
        "pinqi_version": __version__,
        "commit": commit or "unknown (not a git checkout of pinqi)",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "training_steps": int(state.get("global_step", 0)),
        "training_samples": samples_trained(state, config.optim.batch_size),
        "training_minutes": None if clock is None else round(clock["seconds"] / 60, 1),
        "devices": [] if clock is None else clock["devices"],
        "epochs": int(state.get("epoch", 0)),
        "seed": config.seed,
        "data": (
            f"simulated, anatomy {config.data.anatomy}, {config.data.size}x{config.data.size}, "
            f"{config.data.acceleration:g}x, {config.data.n_coils} coils, "
            f"tau {list(config.data.tau)} s"
        ),
        "last_validation": validation,
        "config": config.to_dict(),
        "notes": notes,
    }


def export_model(checkpoint: str | Path, out: str | Path, card: dict) -> Path:
    """Write a compact model file (configuration, weights, model card) from a checkpoint."""
    model, config = load_model(checkpoint)
    out = Path(out)
    torch.save({"config": config.to_dict(), "state_dict": model.state_dict(), "card": card}, out)
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return out
