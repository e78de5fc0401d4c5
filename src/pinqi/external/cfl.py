"""BART's array files: a text header ``NAME.hdr`` and raw data ``NAME.cfl``.

The header holds the line ``# Dimensions`` followed by one line with the size of every
dimension (BART writes 16); the data are complex64 samples in column-major (Fortran) order,
i.e. dimension 0 varies fastest. BART may add further ``#`` sections (``# Command``,
``# Files``, ...) after the dimensions; they are ignored here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Number of dimensions BART's arrays have (``DIMS`` in BART's ``misc/mri.h``).
BART_DIMS = 16


def _file(stem: Path, suffix: str) -> Path:
    """``stem`` with ``suffix`` appended (dots in the name are kept, unlike ``with_suffix``)."""
    return stem.with_name(stem.name + suffix)


def write_cfl(stem: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as BART's ``stem.hdr`` and ``stem.cfl``; return ``stem``.

    Parameters
    ----------
    stem
        Path without suffix; BART's commands take this name.
    array
        Array of at most 16 dimensions, in BART's dimension order (axis ``i`` is BART's
        dimension ``i``); stored as complex64, trailing dimensions of size 1 are added.
    """
    stem = Path(stem)
    array = np.asarray(array)
    if array.ndim > BART_DIMS:
        raise ValueError(f"BART arrays have at most {BART_DIMS} dims, got shape {array.shape}")
    dims = list(array.shape) + [1] * (BART_DIMS - array.ndim)
    _file(stem, ".hdr").write_text("# Dimensions\n" + " ".join(map(str, dims)) + "\n")
    array.astype(np.complex64).ravel(order="F").tofile(_file(stem, ".cfl"))
    return stem


def read_cfl(stem: str | Path) -> np.ndarray:
    """Read BART's ``stem.hdr`` and ``stem.cfl`` into a complex64 array of all its dims.

    Raises
    ------
    FileNotFoundError
        If either file is missing.
    ValueError
        If the header has no ``# Dimensions`` section or the data file has the wrong size.
    """
    stem = Path(stem)
    header, data = _file(stem, ".hdr"), _file(stem, ".cfl")
    for path in (header, data):
        if not path.is_file():
            raise FileNotFoundError(f"BART array file not found: {path}")
    lines = [line.strip() for line in header.read_text().splitlines()]
    if "# Dimensions" not in lines or lines.index("# Dimensions") + 1 >= len(lines):
        raise ValueError(f"{header} has no '# Dimensions' section")
    dims = [int(n) for n in lines[lines.index("# Dimensions") + 1].split()]
    count = int(np.prod(dims))
    values = np.fromfile(data, dtype=np.complex64)
    if values.size != count:
        raise ValueError(
            f"{data} holds {values.size} complex64 values but its header {dims} needs {count}"
        )
    return values.reshape(dims, order="F")
