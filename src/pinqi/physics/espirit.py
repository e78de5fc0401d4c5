"""ESPIRiT coil sensitivities (Uecker et al., MRM 2014) through BART's ``ecalib``.

ESPIRiT takes the sensitivities from the null space of a calibration matrix built from a
fully sampled k-space centre; BART's implementation is the reference one, so pinqi calls it
(``bart`` on the ``PATH``) rather than re-implementing it. The calibration k-space is the one
:func:`~pinqi.physics.coil_estimation.calibration_kspace` assembles from the data (by
default the time-averaged centre of every frame's lines), or a separate calibration scan's.
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch

from pinqi._checks import check_complex
from pinqi.physics.coil_estimation import calibration_width

#: Fewest fully sampled calibration lines, symmetric about the centre, ESPIRiT is run with
#: (5 either side: room for BART's 6-sample kernel to slide).
MIN_CALIBRATION_LINES = 11


def espirit_maps(calibration: torch.Tensor, crop: float = 0.8) -> torch.Tensor:
    """One set of ESPIRiT maps per batch element (``bart ecalib -m 1``).

    Parameters
    ----------
    calibration
        Complex k-space ``(batch, n_coils, H, W)`` (centred, unitary FFT convention of
        :func:`~pinqi.physics.fft.fft2c`), fully sampled in a band of lines about the centre
        column W // 2 and zero elsewhere (:func:`~pinqi.physics.calibration_kspace`).
    crop
        ``ecalib``'s crop threshold: the maps are zero where the eigenvalue is below it
        (outside the object), as BART's SENSE reconstructions expect.

    Returns
    -------
    torch.Tensor
        Complex ``(batch, n_coils, H, W)``, sum_c |c|^2 = 1 inside the object.

    Raises
    ------
    BartNotFoundError
        If ``bart`` is not installed.
    ValueError
        If the calibration band is narrower than :data:`MIN_CALIBRATION_LINES` lines.
    """
    from pinqi.external.bart import run_bart
    from pinqi.external.cfl import read_cfl, write_cfl

    calibration = check_complex("calibration", calibration, 4, "(batch, n_coils, H, W)")
    width = calibration_width(calibration)
    if width < MIN_CALIBRATION_LINES:
        raise ValueError(
            f"the calibration k-space has a fully sampled centre of {width} lines; ESPIRiT "
            f"needs at least {MIN_CALIBRATION_LINES} (undersampled series rarely have them: "
            "use Walsh's maps, or ESPIRiT on a separate calibration scan)"
        )
    maps = []
    with tempfile.TemporaryDirectory(prefix="pinqi-ecalib-") as folder:
        for element in calibration.detach().cpu().numpy():
            # BART: READ = H, PHS1 = W, COIL = dimension 3
            write_cfl(f"{folder}/k", np.transpose(element, (1, 2, 0))[:, :, None, :])
            run_bart("ecalib", "-m", "1", "-c", f"{crop:g}", "k", "maps", cwd=folder)
            sensitivities = read_cfl(f"{folder}/maps").reshape(*element.shape[1:], -1)
            maps.append(np.transpose(sensitivities, (2, 0, 1)))
    return torch.from_numpy(np.stack(maps)).to(calibration.device, calibration.dtype)
