"""Build the network of an experiment: PINQI or a reference method (:class:`MethodConfig`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pinqi.nets.deept1 import DeepT1
from pinqi.nets.dopamine import DOPAMINE
from pinqi.nets.mantis import MANTIS
from pinqi.nets.method_config import MethodConfig
from pinqi.nets.pinqi import PINQI, PINQIConfig
from pinqi.nets.unrolled import UnrolledFit, UnrolledUNet
from pinqi.physics import signal_model


def build_network(
    method: MethodConfig, model: PINQIConfig, signal_model_name: str, tau: Sequence[float]
) -> nn.Module:
    """The network of ``method`` for the signal model ``signal_model_name`` at ``tau`` (s).

    Every network maps ``(kspace, coil_maps, mask)`` to a
    :class:`~pinqi.nets.pinqi.PINQIOutput` whose last ``parameters`` entry is the prediction
    and has a ``signal_model`` attribute.
    """
    q = signal_model(signal_model_name, torch.tensor(tau))
    if method.name == "pinqi":
        return PINQI(q, model)
    if method.name == "mantis":
        return MANTIS(q, method)
    if method.name == "deept1":
        return DeepT1(q, model, method)
    if method.name == "dopamine":
        return DOPAMINE(q, method, model.cg_init_iterations)
    if method.name == "unrolled-unet":
        return UnrolledUNet(q, model, method)
    return UnrolledFit(q, model, method)


def count_parameters(network: nn.Module) -> int:
    """Learnable weights (and strengths) of a network."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad)
