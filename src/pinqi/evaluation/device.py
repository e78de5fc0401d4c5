"""Where the evaluation commands run: ``--device auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device named ``device``; ``"auto"`` is cuda when available, else cpu.

    Raises
    ------
    ValueError
        If ``device`` names no device type, or a CUDA device that this machine lacks.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA"
            raise ValueError(
                f"device {str(device)!r} requested but CUDA is not available (torch "
                f"{torch.__version__} with {build}); use device 'cpu' (--device cpu)"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {str(device)!r} requested but only {torch.cuda.device_count()} CUDA "
                "device(s) are available"
            )
    return resolved
