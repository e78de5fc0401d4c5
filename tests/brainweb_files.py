"""Small files in the format of BrainWeb's models (MINC1, gzip), written by the tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from scipy.io import netcdf_file

from pinqi.data.brainweb import FUZZY_CLASSES, crisp_path, fuzzy_path


def write_minc(path: Path, volume: np.ndarray, *, unsigned: bool = True, image_max=1.0) -> None:
    """Write ``volume`` (z, y, x) as a gzip-compressed MINC1 file like BrainWeb's."""
    raw = path.with_suffix("")
    with netcdf_file(raw, "w") as f:
        for name, n in zip(("zspace", "yspace", "xspace"), volume.shape, strict=True):
            f.createDimension(name, n)
            dim = f.createVariable(name, "d", ())
            dim.step = 0.5
            dim.start = -0.25 * n
        image = f.createVariable("image", "b", ("zspace", "yspace", "xspace"))
        image.signtype = b"unsigned" if unsigned else b"signed"
        image.valid_range = np.array([0.0, 255.0])
        image[:] = volume.astype(np.uint8).view(np.int8)
        vmax = f.createVariable("image-max", "d", ("zspace",))
        vmax[:] = image_max
        vmin = f.createVariable("image-min", "d", ("zspace",))
        vmin[:] = 0.0
    path.write_bytes(gzip.compress(raw.read_bytes()))
    raw.unlink()


def head_labels(shape=(6, 40, 32)) -> np.ndarray:
    """A label volume with a head (muscle/skin ring, skull, CSF, grey and white matter)."""
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    r = np.sqrt(y**2 + x**2)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[r < 0.95] = 6
    labels[r < 0.85] = 7
    labels[r < 0.75] = 1
    labels[r < 0.65] = 2
    labels[(r < 0.45) & (np.abs(z) < 0.9)] = 3  # less brain in the outer slices
    labels[(r < 0.65) & (np.abs(z) > 0.9)] = 7
    return labels


def write_crisp(folder: Path, subject: str, labels: np.ndarray | None = None) -> Path:
    path = crisp_path(folder, subject)
    write_minc(path, head_labels() if labels is None else labels)
    return path


def write_fuzzy(folder: Path, subject: str, labels: np.ndarray | None = None) -> None:
    """Fuzzy memberships of a label volume: 0.8 for the labelled class, 0.2 for background."""
    labels = head_labels() if labels is None else labels
    for k, cls in enumerate(FUZZY_CLASSES):
        membership = np.where(labels == k, 0.8, 0.0) + (0.2 if k == 0 else 0.0)
        write_minc(fuzzy_path(folder, subject, cls), np.round(membership * 255), image_max=1.0)
