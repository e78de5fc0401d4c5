"""Compressed sensing as a reference: BART's ``pics`` with spatial TV, then the baseline's fit.

BART (the Berkeley Advanced Reconstruction Toolbox, https://mrirecon.github.io/bart/) is run
through its command line (``bart`` on the ``PATH``); arrays are exchanged as BART's
``.hdr``/``.cfl`` files (:mod:`pinqi.external.cfl`) in a temporary folder.

Conventions (measured with BART 0.8.00, checked by ``tests/test_evaluation_bart.py``):

- Dimensions: pinqi's H is BART's dimension 0 (READ), W (phase encoding, the columns the
  masks select) dimension 1 (PHS1), the coils dimension 3 (COIL) and the delays dimension 10
  (TIME). One ``pics`` call reconstructs all delays of a sample; coil maps have no TIME
  dimension and are shared by all delays.
- FFT: ``bart fft`` is centred with the centre at N // 2 (BART: N/2 for even N, (N-1)/2 for
  odd N), like pinqi's :func:`~pinqi.physics.fft.fft2c`. Without ``-u`` it is not normalised:
  ``bart fft 3`` = sqrt(H W) * ``fft2c``, ``bart fft -u 3`` = ``fft2c`` (even and odd sizes).
- ``pics`` uses the unitary centred FFT, so pinqi's k-space goes in unchanged. ``pics``
  rescales the data by a factor from the k-space centre unless ``-w`` is given; it runs with
  ``-w 1`` here, so the images come back in pinqi's units and ``tv_weight`` is a weight in
  those units. The sampling pattern is passed explicitly (``-p``) rather than derived from
  the zeros of the k-space. For even H and W the fully sampled round trip returns pinqi's
  images; for odd sizes ``pics`` centres differently from ``bart fft`` (images shifted by one
  pixel, with a global phase), so odd sizes are refused.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pinqi.evaluation.baseline import BaselineConfig, fit_flat_prior
from pinqi.external.bart import find_bart, run_bart
from pinqi.external.cfl import read_cfl, write_cfl
from pinqi.physics import CartesianAcquisition, SignalModel

#: BART dimensions of pinqi's image axes H, W, of the coils and of the delays.
READ, PHASE, COIL, TIME = 0, 1, 3, 10

#: Bit flags of BART's dimensions: the spatial TV acts on READ and PHASE; with
#: ``joint_frames`` its thresholding couples the delays (TIME).
SPATIAL_FLAGS = (1 << READ) | (1 << PHASE)
TIME_FLAG = 1 << TIME


@dataclass(frozen=True)
class BartConfig:
    """Settings of the BART pics reference.

    The defaults of ``tv_weight``, ``iterations`` and ``joint_frames`` were chosen on the
    validation split (``benchmarks/bart_tune.py``; docs/benchmarks.md, "BART pics: TV weight
    chosen on the validation split").

    Attributes
    ----------
    tv_weight
        Weight of the spatial total variation in ``pics``'s objective, in pinqi's image units
        (|M0| <= 1; the data are not rescaled, ``-w 1``).
    iterations
        ``pics`` iterations (ADMM, BART's default solver for TV).
    joint_frames
        Couple the delays in the TV (joint thresholding over BART's TIME dimension, a
        vectorial TV with shared edges); otherwise each delay has its own isotropic TV.
    lambda_fit
        Strength of the fit's pull to the flat prior, the baseline's
        (:func:`~pinqi.evaluation.baseline.fit_flat_prior`).
    """

    tv_weight: float = 0.01
    iterations: int = 200
    joint_frames: bool = False
    lambda_fit: float = BaselineConfig.lambda_fit

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tv_weight) and self.tv_weight >= 0):
            raise ValueError(f"tv_weight must be finite and >= 0, got {self.tv_weight}")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int):
            raise ValueError(f"iterations must be an integer >= 1, got {self.iterations!r}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be an integer >= 1, got {self.iterations}")
        if not (math.isfinite(self.lambda_fit) and self.lambda_fit >= 0):
            raise ValueError(f"lambda_fit must be finite and >= 0, got {self.lambda_fit}")

    def regularizer(self) -> str:
        """``pics``'s ``-R`` option: ``T:3:0:WEIGHT`` or, for ``joint_frames``, ``T:3:1024:W``."""
        joint = TIME_FLAG if self.joint_frames else 0
        return f"T:{SPATIAL_FLAGS}:{joint}:{self.tv_weight:g}"


def to_bart(array: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
    """View of ``array`` whose axis ``i`` is BART's dimension ``dims[i]`` (size 1 elsewhere).

    E.g. k-space ``(n_tau, n_coils, H, W)`` with ``dims = (TIME, COIL, READ, PHASE)`` becomes
    ``(H, W, 1, n_coils, 1, 1, 1, 1, 1, 1, n_tau)``.
    """
    if len(dims) != array.ndim or len(set(dims)) != len(dims):
        raise ValueError(f"dims {dims} must name one distinct BART dim per axis of {array.shape}")
    ordered = np.transpose(array, np.argsort(dims))
    missing = [d for d in range(max(dims) + 1) if d not in dims]
    return np.expand_dims(ordered, missing)


def bart_pics(
    kspace: torch.Tensor,
    coil_maps: torch.Tensor,
    mask: torch.Tensor,
    config: BartConfig = BartConfig(),
) -> torch.Tensor:
    """Images ``(batch, n_tau, H, W)`` of ``bart pics`` with spatial TV and the given coils.

    One ``pics`` call per sample reconstructs all its delays (BART's TIME dimension). Runs on
    the CPU; the images come back on the device and in the complex dtype of ``kspace``.

    Parameters
    ----------
    kspace
        Complex ``(batch, n_tau, n_coils, H, W)``, centred as pinqi's FFT; H and W even.
    coil_maps
        Complex ``(batch, n_coils, H, W)``, used as pinqi's operator uses them (``pics``'s
        SENSE model is the same, normalised or not).
    mask
        0/1 sampling mask broadcastable to ``(batch, n_tau, H, W)``, e.g. ``(batch, n_tau, 1,
        W)``.
    config
        TV weight, iterations and the coupling of the delays.

    Raises
    ------
    BartNotFoundError
        If ``bart`` is not on the ``PATH``.
    ValueError
        For inputs of the wrong shape or dtype, or odd H or W.
    """
    acquisition = CartesianAcquisition(coil_maps, mask)
    kspace = acquisition.check_kspace("kspace", kspace)
    batch, n_tau, height, width = acquisition.image_shape
    if height % 2 or width % 2:
        raise ValueError(
            f"bart pics needs even image sizes (its centring differs from pinqi's FFT for odd "
            f"sizes), got H x W = {height} x {width}"
        )
    find_bart()
    masks = acquisition.mask.expand(batch, n_tau, height, width).detach().cpu().numpy()
    data = (kspace.detach().cpu() * acquisition.mask.detach().cpu().unsqueeze(2)).numpy()
    coils = coil_maps.detach().cpu().numpy()
    images = []
    with tempfile.TemporaryDirectory(prefix="pinqi-bart-") as folder:
        for b in range(batch):
            write_cfl(Path(folder) / "kspace", to_bart(data[b], (TIME, COIL, READ, PHASE)))
            write_cfl(Path(folder) / "coils", to_bart(coils[b], (COIL, READ, PHASE)))
            write_cfl(Path(folder) / "pattern", to_bart(masks[b], (TIME, READ, PHASE)))
            run_bart(
                "pics",
                "-w",
                "1",
                "-R",
                config.regularizer(),
                "-i",
                str(config.iterations),
                "-p",
                "pattern",
                "kspace",
                "coils",
                "images",
                cwd=folder,
            )
            result = read_cfl(Path(folder) / "images")
            expected = [1] * result.ndim
            expected[READ], expected[PHASE], expected[TIME] = height, width, n_tau
            if list(result.shape) != expected:
                raise RuntimeError(f"bart pics returned dims {result.shape}, expected {expected}")
            images.append(result.reshape(height, width, n_tau, order="F").transpose(2, 0, 1))
    return torch.from_numpy(np.stack(images)).to(device=kspace.device, dtype=kspace.dtype)


def bart_pics_fit(
    model: SignalModel,
    kspace: torch.Tensor,
    coil_maps: torch.Tensor,
    mask: torch.Tensor,
    config: BartConfig = BartConfig(),
) -> torch.Tensor:
    """Parameter maps ``(batch, P, H, W)`` of BART pics (spatial TV) + the baseline's fit.

    The images of :func:`bart_pics` are fitted pixel by pixel exactly as the CG-SENSE
    baseline fits its images (:func:`~pinqi.evaluation.baseline.fit_flat_prior`). The fit
    runs on the device of the inputs (the signal model must be there too).

    Parameters
    ----------
    model
        Signal model of the delays.
    kspace, coil_maps, mask
        As for :func:`bart_pics`.
    config
        Settings of ``pics`` and of the fit.
    """
    images = bart_pics(kspace, coil_maps, mask, config)
    params, _ = fit_flat_prior(model, images, config.lambda_fit)
    return params
