"""Reading raw multi-coil Cartesian k-space from ISMRMRD/MRD HDF5 files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pinqi.io.hdf5 import open_data_file
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
        Whether the coils were prewhitened.
    whitening
        The prewhitening matrix ``(n_coils, n_coils)`` applied (None without): a calibration
        scan must be whitened with the same one (:func:`read_calibration`).
    """

    kspace: torch.Tensor
    mask: torch.Tensor
    tau: torch.Tensor
    prewhitened: bool
    whitening: np.ndarray | None = None


def read_ismrmrd(
    path: str | Path,
    tau: list[float] | None = None,
    group: str = "dataset",
    whiten: bool = True,
    slice_index: int = 0,
    whitening: np.ndarray | None = None,
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
    whitening
        Prewhiten with this matrix instead of one from the file's noise scans.
    """
    data, mask, header_ti, whitening = _read_kspace(path, group, whiten, slice_index, whitening)
    n_tau = data.shape[0]
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
        prewhitened=whitening is not None,
        whitening=whitening,
    )


def read_calibration(path: str | Path, raw: RawData, slice_index: int = 0) -> RawData:
    """A separate coil-calibration scan (e.g. a fully sampled low-resolution GRE) for ``raw``.

    Its frames are read like :func:`read_ismrmrd`'s and prewhitened with ``raw``'s matrix
    (not at all when ``raw`` is not prewhitened), so that the coil maps fit ``raw``; its
    delays do not matter (set to 0). The same field of view as ``raw`` is expected; the
    matrix may differ (:func:`prepare_raw` brings it onto ``raw``'s).
    """
    data, mask, _, whitening = _read_kspace(
        path, "dataset", raw.prewhitened, slice_index, raw.whitening, use_noise_scans=False
    )
    return RawData(
        kspace=data[None].to(torch.complex64),
        mask=torch.from_numpy(mask)[None, :, None],
        tau=torch.zeros(data.shape[0]),
        prewhitened=whitening is not None,
        whitening=whitening,
    )


def _read_kspace(
    path: str | Path,
    group: str,
    whiten: bool,
    slice_index: int,
    whitening: np.ndarray | None,
    use_noise_scans: bool = True,
) -> tuple[torch.Tensor, np.ndarray, list[float], np.ndarray | None]:
    """Sorted k-space ``(n_tau, n_coils, H, W)`` and line mask ``(n_tau, W)`` of a file.

    Also returns the header's TIs (ms) and the whitening matrix applied (None without).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ISMRMRD file not found: {path}")
    what = "ISMRMRD raw data, e.g. converted from the scanner's with siemens_to_ismrmrd"
    open_data_file(path, (f"{group}/xml", f"{group}/data"), what).close()
    import ismrmrd
    from ismrmrd import xsd

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
    if not whiten:
        whitening = None
    elif whitening is None and noise and use_noise_scans:
        samples = np.concatenate(noise, axis=1)
        covariance = samples @ samples.conj().T / samples.shape[1]
        whitening = np.linalg.inv(np.linalg.cholesky(covariance))
    if whitening is not None:
        if whitening.shape != (n_coils, n_coils):
            raise ValueError(
                f"{path}: {n_coils} coils, but the whitening matrix is for {len(whitening)}"
            )
        kspace = np.einsum("ij,tjxy->tixy", whitening, kspace).astype(np.complex64)
    data = torch.from_numpy(kspace)
    if n_read > n_recon:  # crop the oversampled readout in image space
        images = ifft2c(data)
        start = (n_read - n_recon) // 2
        data = (
            fft2c(images[..., start : start + n_recon, :]) * torch.from_numpy(mask)[:, None, None]
        )
    return data, mask, header_ti, whitening
