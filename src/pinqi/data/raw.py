"""A raw scan as a PINQI sample: k-space on the model's matrix, coil maps, intensity scale.

The step between reading raw k-space (:mod:`pinqi.io.ismrmrd`) and writing a data set in the
``pinqi simulate`` layout (:func:`~pinqi.data.datasets.write_h5`).
"""

from __future__ import annotations

import torch

from pinqi.data.undersample import intensity_scale
from pinqi.io.ismrmrd import RawData
from pinqi.physics import calibration_kspace, espirit_maps, ratio_maps, walsh_maps
from pinqi.physics.coil_estimation import align_phase
from pinqi.physics.fft import ifft2c


def prepare_raw(
    raw: RawData,
    size: int | None = None,
    coil_method: str = "walsh",
    calibration: RawData | None = None,
) -> dict:
    """Raw k-space ready for PINQI: optional k-space crop, coil maps and intensity scale.

    Parameters
    ----------
    raw
        Sorted k-space (:func:`~pinqi.io.ismrmrd.read_ismrmrd`).
    size
        Crop the central ``size x size`` of k-space (a lower resolution over the same field
        of view, e.g. to match a model trained at 96 x 96); None keeps the matrix.
    coil_method
        ``"walsh"``, ``"ratio"`` or ``"espirit"`` (:func:`~pinqi.physics.espirit_maps`, needs
        BART and a fully sampled centre of at least 11 lines, which undersampled series
        rarely have: use it with ``calibration``). Estimated from the calibration k-space:
        ``calibration``'s when given, else the time-averaged k-space centre of every frame's
        lines (:func:`~pinqi.physics.calibration_kspace`). The image's smooth phase is then
        moved into the maps (:func:`~pinqi.physics.coil_estimation.align_phase`) so that the
        images PINQI sees are nearly real, as in training.
    calibration
        A separate calibration scan (:func:`~pinqi.io.ismrmrd.read_calibration`) over the
        same field of view; its k-space is cropped or zero-filled onto ``raw``'s matrix.

    Returns
    -------
    dict
        A sample in the ``pinqi simulate`` layout without ground truth (``kspace``, ``mask``,
        ``coil_maps``, ``tau``, ``noise_sigma``) and ``intensity_scale``: the k-space is
        divided by the 99th percentile of the coil-combined calibration image of the data
        (not of a calibration scan), the normalisation of :mod:`pinqi.data.undersample`.
    """
    estimate = {"walsh": walsh_maps, "ratio": ratio_maps, "espirit": None}
    if coil_method not in estimate:
        raise ValueError(f"coil_method must be one of {sorted(estimate)}, got {coil_method!r}")
    kspace, mask = raw.kspace, raw.mask
    height, width = kspace.shape[-2:]
    if size is not None and (size > min(height, width) or size % 2):
        raise ValueError(f"size must be even and <= the matrix {height}x{width}, got {size}")
    target = (size, size) if size is not None else (height, width)
    kspace = _fit_matrix(kspace, target)
    mask = _fit_matrix(mask.to(kspace.real.dtype), (1, target[1])).bool()
    longest = int(raw.tau.argmax())
    data_calibration = calibration_kspace(kspace, mask, frame=longest, lines="union")
    data_images = ifft2c(data_calibration)
    source = data_calibration
    if calibration is not None:
        if calibration.kspace.shape[2] != kspace.shape[2]:
            raise ValueError(
                f"the calibration scan has {calibration.kspace.shape[2]} coils, the data "
                f"{kspace.shape[2]}"
            )
        scan = calibration_kspace(calibration.kspace, calibration.mask, lines="union")
        source = _fit_matrix(scan, target)
    if coil_method == "espirit":
        coil_maps = espirit_maps(source)
    else:
        coil_maps = estimate[coil_method](ifft2c(source))
    coil_maps = align_phase(coil_maps, data_images)
    scale = intensity_scale((coil_maps.conj() * data_images).sum(1).abs())
    return {
        "kspace": (kspace / scale)[0],
        "mask": mask[0],
        "coil_maps": coil_maps[0],
        "tau": raw.tau,
        "noise_sigma": torch.tensor(0.0),
        "intensity_scale": scale,
    }


def _fit_matrix(kspace: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Centre-crop or zero-fill the last two (k-space) axes to ``shape``.

    The centre stays at ``N // 2`` and complex data keep the image scale of the unitary FFT:
    a lower or higher resolution over the same field of view.
    """
    height, width = kspace.shape[-2:]
    out = kspace.new_zeros(*kspace.shape[:-2], *shape)
    rows = min(height, shape[0])
    cols = min(width, shape[1])
    src_r, dst_r = height // 2 - rows // 2, shape[0] // 2 - rows // 2
    src_c, dst_c = width // 2 - cols // 2, shape[1] // 2 - cols // 2
    out[..., dst_r : dst_r + rows, dst_c : dst_c + cols] = kspace[
        ..., src_r : src_r + rows, src_c : src_c + cols
    ]
    if out.is_complex():
        out = out * (shape[0] * shape[1] / (height * width)) ** 0.5
    return out
