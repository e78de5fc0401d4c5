"""Reading raw multi-coil Cartesian k-space from ISMRMRD/MRD HDF5 files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pinqi.physics.fft import fft2c, ifft2c


@dataclass
class RawData:
    """Sorted k-space of one slice in pinqi's conventions.

    Attributes
    ----------
    kspace
        Complex64 ``(1, n_tau, n_coils, H, W)``: readout along H (oversampling removed),
        phase encoding along W with the k-space centre at ``W // 2``; zero where not acquired.
    mask
        Bool ``(1, n_tau, 1, W)``: the acquired phase-encoding lines.
    tau
        Delays in s, ``(n_tau,)``.
    prewhitened
        Whether noise scans were found and the coils were prewhitened.
    """

    kspace: torch.Tensor
    mask: torch.Tensor
    tau: torch.Tensor
    prewhitened: bool


def read_ismrmrd(
    path: str | Path,
    tau: list[float] | None = None,
    group: str = "dataset",
    whiten: bool = True,
    slice_index: int = 0,
) -> RawData:
    """Read and sort the acquisitions of an ISMRMRD file into (tau, coil, ky, kx).

    The frame (delay) of an acquisition is its ``contrast`` index (its ``repetition`` index
    if all contrasts are 0), its line the ``kspace_encode_step_1`` index, centred with the
    header's ``encodingLimits``. Readout oversampling (encoded x > recon x) is removed by
    cropping in image space. Noise scans (``ACQ_IS_NOISE_MEASUREMENT``), when present, give
    the coil noise covariance Psi and the data are prewhitened with the inverse of its
    Cholesky factor. The delays come from ``tau`` or the header's ``sequenceParameters/TI``
    (ms).

    Parameters
    ----------
    path
        ISMRMRD HDF5 file.
    tau
        Delays in s; overrides the header.
    group
        HDF5 group of the data set.
    whiten
        Prewhiten with the noise scans when the file has them.
    slice_index
        The slice (``idx.slice``) to read from a multi-slice file.
    """
    import ismrmrd
    from ismrmrd import xsd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ISMRMRD file not found: {path}")
    dataset = ismrmrd.Dataset(str(path), group, create_if_needed=False)
    try:
        header = xsd.CreateFromDocument(dataset.read_xml_header())
        encoding = header.encoding[0]
        n_read = encoding.encodedSpace.matrixSize.x
        n_recon = encoding.reconSpace.matrixSize.x
        n_lines = encoding.encodedSpace.matrixSize.y
        limits = encoding.encodingLimits.kspace_encoding_step_1
        centre = limits.center if limits is not None and limits.center is not None else n_lines // 2
        noise, lines = [], []
        for i in range(dataset.number_of_acquisitions()):
            acquisition = dataset.read_acquisition(i)
            if acquisition.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
                noise.append(np.asarray(acquisition.data))
                continue
            idx = acquisition.idx
            if idx.slice != slice_index:
                continue
            lines.append(
                (
                    idx.contrast,
                    idx.repetition,
                    idx.kspace_encode_step_1,
                    np.asarray(acquisition.data),
                )
            )
        sequence = header.sequenceParameters
        header_ti = list(sequence.TI) if sequence is not None and sequence.TI else []
    finally:
        dataset.close()
    if not lines:
        raise ValueError(f"{path} holds no imaging acquisitions of slice {slice_index}")
    by_contrast = any(c for c, _, _, _ in lines)
    frames = [c if by_contrast else r for c, r, _, _ in lines]
    n_tau = max(frames) + 1
    n_coils = lines[0][3].shape[0]
    kspace = np.zeros((n_tau, n_coils, n_read, n_lines), np.complex64)
    mask = np.zeros((n_tau, n_lines), bool)
    shift = n_lines // 2 - centre
    for frame, (_, _, line, data) in zip(frames, lines, strict=True):
        if data.shape != (n_coils, n_read):
            raise ValueError(
                f"{path}: acquisition of shape {data.shape}, expected {(n_coils, n_read)}"
            )
        if not 0 <= line + shift < n_lines:
            raise ValueError(
                f"{path}: phase-encoding index {line} lies outside the {n_lines} encoded lines "
                f"centred at {centre}"
            )
        kspace[frame, :, :, line + shift] = data
        mask[frame, line + shift] = True
    prewhitened = whiten and bool(noise)
    if prewhitened:
        samples = np.concatenate(noise, axis=1)
        covariance = samples @ samples.conj().T / samples.shape[1]
        whitening = np.linalg.inv(np.linalg.cholesky(covariance))
        kspace = np.einsum("ij,tjxy->tixy", whitening, kspace).astype(np.complex64)
    data = torch.from_numpy(kspace)
    if n_read > n_recon:  # crop the oversampled readout in image space
        images = ifft2c(data)
        start = (n_read - n_recon) // 2
        data = (
            fft2c(images[..., start : start + n_recon, :]) * torch.from_numpy(mask)[:, None, None]
        )
    if tau is None:
        if len(header_ti) != n_tau:
            raise ValueError(
                f"{path}: {n_tau} frames but the header gives {len(header_ti)} TI values; pass tau"
            )
        tau = [t / 1000 for t in header_ti]
    if len(tau) != n_tau:
        raise ValueError(f"{len(tau)} delays given for {n_tau} frames")
    return RawData(
        kspace=data[None].to(torch.complex64),
        mask=torch.from_numpy(mask)[None, :, None],
        tau=torch.tensor(tau, dtype=torch.float32),
        prewhitened=prewhitened,
    )


def prepare_raw(raw: RawData, size: int | None = None, coil_method: str = "walsh") -> dict:
    """Raw k-space ready for PINQI: optional k-space crop, coil maps and intensity scale.

    Parameters
    ----------
    raw
        Sorted k-space (:func:`read_ismrmrd`).
    size
        Crop the central ``size x size`` of k-space (a lower resolution over the same field
        of view, e.g. to match a model trained at 96 x 96); None keeps the matrix.
    coil_method
        ``"walsh"`` or ``"ratio"``, estimated from the time-averaged k-space centre (every
        frame's lines, :func:`~pinqi.physics.calibration_images`), with the image's smooth
        phase moved into the maps (:func:`~pinqi.physics.coil_estimation.align_phase`) so that
        the images PINQI sees are nearly real, as in training.

    Returns
    -------
    dict
        A sample in the ``pinqi simulate`` layout without ground truth (``kspace``, ``mask``,
        ``coil_maps``, ``tau``, ``noise_sigma``) and ``intensity_scale``: the k-space is
        divided by the 99th percentile of the coil-combined calibration image of the longest
        delay, the normalisation of :mod:`pinqi.data.undersample`.
    """
    from pinqi.data.undersample import intensity_scale
    from pinqi.physics import calibration_images, ratio_maps, walsh_maps
    from pinqi.physics.coil_estimation import align_phase

    kspace, mask = raw.kspace, raw.mask
    if size is not None:
        height, width = kspace.shape[-2:]
        if size > min(height, width) or size % 2:
            raise ValueError(f"size must be even and <= the matrix {height}x{width}, got {size}")
        top, left = height // 2 - size // 2, width // 2 - size // 2
        kspace = kspace[..., top : top + size, left : left + size] * (
            size / (height * width) ** 0.5
        )
        mask = mask[..., left : left + size]
    longest = int(raw.tau.argmax())
    calibration = calibration_images(kspace, mask, frame=longest, lines="union")
    estimate = {"walsh": walsh_maps, "ratio": ratio_maps}
    if coil_method not in estimate:
        raise ValueError(f"coil_method must be 'walsh' or 'ratio', got {coil_method!r}")
    coil_maps = align_phase(estimate[coil_method](calibration), calibration)
    scale = intensity_scale((coil_maps.conj() * calibration).sum(1).abs())
    return {
        "kspace": (kspace / scale)[0],
        "mask": mask[0],
        "coil_maps": coil_maps[0],
        "tau": raw.tau,
        "noise_sigma": torch.tensor(0.0),
        "intensity_scale": scale,
    }
