"""Outputs that appear complete or not at all.

A command writes into a temporary folder (or file) beside its target and moves the result in
only when everything is written, so an error or an interrupt leaves no half-written output.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_folder(out: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success, move its files into ``out``.

    Files already in ``out`` that the command did not write are kept; those it wrote are
    replaced. On an error nothing in ``out`` changes (and ``out`` is not created).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        yield staging
        out.mkdir(exist_ok=True)
        for file in staging.iterdir():
            if file.is_file():
                os.chmod(file, _user_mode())
            os.replace(file, out / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _user_mode() -> int:
    """The permissions a new file gets from the user's umask (0o666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def staged_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success, move it to ``path``.

    The result has the permissions of any file the user creates (the umask's), not those of
    the private temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, _user_mode())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
