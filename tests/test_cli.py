import csv
import subprocess
import sys

import pytest

from pinqi.cli import main
from pinqi.demo import run_demo
from pinqi.io.checkpoints import default_model_path


def test_help_lists_subcommands():
    result = subprocess.run(
        [sys.executable, "-m", "pinqi", "--help"], capture_output=True, text=True, check=True
    )
    commands = (
        "demo",
        "simulate",
        "train",
        "evaluate",
        "reconstruct",
        "info",
        "export",
        "undersample",
        "import-ismrmrd",
        "fit",
        "roi",
        "sequence",
    )
    for command in commands:
        assert command in result.stdout


def test_shipped_model_and_card_exist():
    assert default_model_path().is_file()
    assert default_model_path().with_suffix(".json").is_file()


def test_demo_with_the_shipped_model(tmp_path, capsys):
    result = run_demo(tmp_path, seed=1)
    out = capsys.readouterr().out
    assert "layer 1" in out and "layer 2" in out and "PINQI" in out
    assert result.figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(result.table)))
    assert [r["method"] for r in rows] == ["PINQI", "CG-SENSE + fit"]
    # the shipped model must beat the non-learned baseline on a test slice
    assert result.metrics["PINQI"]["t1_nrmse"] < result.metrics["CG-SENSE + fit"]["t1_nrmse"]


def test_cli_rejects_unknown_command():
    with pytest.raises(SystemExit):
        main(["frobnicate"])
