"""Opening HDF5 input files (pinqi's data files, ISMRMRD raw data) for reading."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py

#: What the data files are and where they come from, for messages about other files.
DATA_FILES = (
    "the files of pinqi simulate, undersample and import-ismrmrd; for image series (NIfTI, "
    "DICOM) use pinqi undersample or pinqi fit --images"
)


def open_data_file(path: str | Path, required: Sequence[str], what: str = DATA_FILES) -> h5py.File:
    """The HDF5 data file ``path``, open for reading, holding the datasets ``required``.

    ``required`` may name datasets in groups (``"dataset/xml"``); ``what`` says in messages
    which files are meant.

    Raises
    ------
    FileNotFoundError
        There is no file at ``path``.
    ValueError
        One line for a file that is not HDF5, a damaged or truncated one, or one without a
        ``required`` dataset.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HDF5 data set not found: {path}")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path} is not an HDF5 data set ({what})")
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(f"{path} is a damaged or truncated HDF5 file ({reason})") from None
    missing = [name for name in required if name not in file]
    if missing:
        file.close()
        raise ValueError(f"{path} lacks the datasets {missing} ({what})")
    return file
