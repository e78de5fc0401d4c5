"""External programs pinqi calls: BART (the Berkeley Advanced Reconstruction Toolbox).

BART runs through its command line (``bart`` on the ``PATH``); arrays are exchanged as its
``.hdr``/``.cfl`` files (:mod:`pinqi.external.cfl`). The lowest layer of the package, so that
physics (ESPIRiT coil maps) and evaluation (the compressed-sensing reference) can both use it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

#: How to get BART, appended to the error where it is missing.
BART_INSTALL_HINT = "install it (Debian/Ubuntu: apt-get install -y bart)"


class BartNotFoundError(FileNotFoundError):
    """The ``bart`` executable is not on the ``PATH``."""


def find_bart() -> str:
    """Path of the ``bart`` executable.

    Raises
    ------
    BartNotFoundError
        If ``bart`` is not on the ``PATH``.
    """
    path = shutil.which("bart")
    if path is None:
        raise BartNotFoundError(f"BART not found: {BART_INSTALL_HINT}")
    return path


def run_bart(*args: str, cwd: str | Path) -> str:
    """Run ``bart ARGS`` in the folder ``cwd`` (where its array files are); return its stdout.

    Raises
    ------
    BartNotFoundError
        If ``bart`` is not on the ``PATH``.
    RuntimeError
        If the command fails; the message holds the command and the end of its output.
    """
    command = [find_bart(), *args]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        output = (done.stderr + done.stdout).strip()[-1000:]
        raise RuntimeError(
            f"'bart {' '.join(args)}' failed with exit status {done.returncode}: {output}"
        )
    return done.stdout
