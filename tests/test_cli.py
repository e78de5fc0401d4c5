import csv
import subprocess
import sys
from dataclasses import replace

import pytest

from pinqi.cli import main
from pinqi.data.datasets import SimulatedDataset
from pinqi.demo import run_demo
from pinqi.training.checkpoints import default_model_path, load_model

from conftest import nrmse, wrong_maps


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
    # and be accurate: nRMSE ~0.15 where every plausible wrong map of the demo's slice (a
    # constant, transposed, flipped or rescaled truth) is >= 0.21 off
    assert result.metrics["PINQI"]["t1_nrmse"] < 0.18
    _, config = load_model(default_model_path())
    data = replace(config.data.without_coverage(), anatomy="builtin", brainweb_dir=None)
    sample = SimulatedDataset(data, "test", 1, seed=1)[0]
    truth, inside = 1 / sample["params"][-1], sample["brain_mask"]
    assert min(nrmse(w, truth, inside) for w in wrong_maps(truth, inside).values()) > 0.18


def test_cli_rejects_unknown_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2 and "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_help_names_defaults():
    text = build_help("fit")
    assert "(default: saturation)" in text and "(default: None)" not in text


def test_every_option_has_a_help_text():
    import argparse

    from pinqi.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    missing = [
        f"{name} {'/'.join(action.option_strings) or action.dest}"
        for name, parser in commands.items()
        for action in parser._actions
        if not action.help and not isinstance(action, argparse._HelpAction)
    ]
    assert not missing


def build_help(command):
    import contextlib
    import io

    from pinqi.cli import build_parser

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    return buffer.getvalue()


def test_roi_does_not_overwrite_silently(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "roi.csv").write_text("earlier results")
    with pytest.raises(SystemExit, match=r"roi\.csv exists; give --out"):
        main(["roi", "--map", "m.nii.gz", "--labels", "l.nii.gz"])
    assert (tmp_path / "roi.csv").read_text() == "earlier results"


def test_make_series_example_runs_without_brainweb(tmp_path, monkeypatch):
    import runpy
    from pathlib import Path

    script = Path(__file__).parents[1] / "examples" / "make_series.py"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path / "no-brainweb")])
    runpy.run_path(str(script), run_name="__main__")
    assert all((tmp_path / f).is_file() for f in ("series.nii.gz", "full.h5", "labels.nii.gz"))


def test_disk_series_example_is_fitted_to_its_true_t1(tmp_path, monkeypatch):
    """examples/make_disk_series.py (docs/results.md): pinqi fit recovers the disks' T1."""
    import runpy
    from pathlib import Path

    import nibabel as nib
    import numpy as np

    script = Path(__file__).parents[1] / "examples" / "make_disk_series.py"
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    series = nib.load(tmp_path / "series.nii.gz")
    assert series.shape == (96, 96, 1, 5) and np.iscomplexobj(series.dataobj)
    main(["fit", "--images", "series.nii.gz", "--tau", "0.5,1,1.5,2,8", "--out", "fit"])
    t1 = np.asarray(nib.load(tmp_path / "fit" / "t1.nii.gz").dataobj)
    labels = np.asarray(nib.load(tmp_path / "labels.nii.gz").dataobj)
    for label, true_t1 in ((1, 0.3), (2, 0.8), (3, 1.5)):
        assert np.median(t1[labels == label]) == pytest.approx(true_t1, rel=0.02)


def test_export_of_an_exported_model_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"is not a training checkpoint \(an exported model"):
        main(["export", "--checkpoint", str(default_model_path()), "--out", str(tmp_path / "m.pt")])
    assert not (tmp_path / "m.pt").exists()
