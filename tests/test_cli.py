import subprocess
import sys

import pytest

from pinqi.cli import main
from pinqi.demo import run_demo


def test_help_lists_subcommands():
    result = subprocess.run(
        [sys.executable, "-m", "pinqi", "--help"], capture_output=True, text=True, check=True
    )
    assert "demo" in result.stdout


def test_demo_writes_png_and_reports(tmp_path, capsys):
    result = run_demo(tmp_path, size=48, acceleration=2.0, seed=1)
    out = capsys.readouterr().out
    assert "layer 1 (CG data consistency" in out and "layer 2 (signal fit, newton)" in out
    assert result.figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # at low acceleration the pixel-wise fit recovers T1 to within ~15% of the tissue values
    assert result.t1_mae_newton < 0.25


def test_cli_demo_runs(tmp_path):
    main(["demo", "--out", str(tmp_path), "--size", "32", "--seed", "2"])
    assert (tmp_path / "demo.png").exists()


def test_cli_rejects_unknown_command():
    with pytest.raises(SystemExit):
        main(["frobnicate"])
