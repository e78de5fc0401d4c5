"""MR physics: signal models, the Cartesian multi-coil operator, coil maps and masks.

Shape conventions (used throughout pinqi):

- images: complex ``(batch, n_tau, H, W)``
- k-space: complex ``(batch, n_tau, n_coils, H, W)``
- sampling masks: 0/1 ``(batch, n_tau, H, W)`` or broadcastable, e.g. ``(batch, n_tau, 1, W)``
- coil maps: complex ``(batch, n_coils, H, W)``
- parameter maps: real ``(batch, 3, H, W)`` = ``[Re M0, Im M0, R1]``, R1 = 1/T1 in 1/s
"""

from pinqi.physics.acquisition import CartesianAcquisition
from pinqi.physics.coil_estimation import (
    calibration_images,
    calibration_kspace,
    ratio_maps,
    walsh_maps,
)
from pinqi.physics.coils import birdcage_maps
from pinqi.physics.espirit import espirit_maps
from pinqi.physics.fft import fft2c, ifft2c
from pinqi.physics.sampling import variable_density_mask
from pinqi.physics.signal_models import (
    RELAXATION_BOUNDS,
    SIGNAL_MODELS,
    InversionRecovery,
    InversionRecoveryAB,
    SaturationRecovery,
    SignalModel,
    signal_model,
)

__all__ = [
    "RELAXATION_BOUNDS",
    "SIGNAL_MODELS",
    "CartesianAcquisition",
    "InversionRecovery",
    "InversionRecoveryAB",
    "SaturationRecovery",
    "SignalModel",
    "birdcage_maps",
    "calibration_images",
    "calibration_kspace",
    "espirit_maps",
    "fft2c",
    "ifft2c",
    "ratio_maps",
    "signal_model",
    "variable_density_mask",
    "walsh_maps",
]
