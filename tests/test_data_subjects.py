import json
import warnings

import h5py
import pytest

from pinqi.cli import main
from pinqi.data.brainweb import (
    SPLITS,
    normalise_subjects,
    resolve_subjects,
    split_subjects,
)
from pinqi.data.datasets import SimulatedDataset
from pinqi.data.simulation import SimulationConfig

from brainweb_files import write_crisp, write_fuzzy


@pytest.fixture
def folder(tmp_path):
    """Fake BrainWeb files of subjects 20 (crisp), 49 (fuzzy) and the val subject 05."""
    write_crisp(tmp_path, "20")
    write_fuzzy(tmp_path, "49")
    write_crisp(tmp_path, SPLITS["val"][0])
    return tmp_path


def brainweb_config(folder) -> SimulationConfig:
    return SimulationConfig(size=16, fov_mm=20.0, anatomy="brainweb", brainweb_dir=str(folder))


def test_subjects_are_zero_padded_names():
    assert normalise_subjects([20, "49", " 4", "05"]) == ("20", "49", "04", "05")


@pytest.mark.parametrize(
    ("subjects", "message"),
    [
        ([], "non-empty list"),
        ("20", "non-empty list"),
        (["20", "99", "x"], r"unknown BrainWeb subjects \['99', 'x'\]"),
        (["20", 20], r"subjects \['20'\] are listed more than once"),
    ],
)
def test_malformed_subject_lists_are_refused(subjects, message):
    with pytest.raises(ValueError, match=message):
        normalise_subjects(subjects)


def test_explicit_subjects_are_resolved_against_the_folder(folder):
    assert resolve_subjects(folder, [49, "20"]) == ["49", "20"]  # crisp or fuzzy, given order


def test_every_missing_subject_and_the_folder_are_named(folder):
    with pytest.raises(FileNotFoundError) as error:
        resolve_subjects(folder, ["20", "04", 6])
    message = str(error.value)
    assert "['04', '06']" in message and str(folder) in message
    assert "subject04_crisp_v.mnc.gz" in message
    with pytest.raises(FileNotFoundError, match="folder not found"):
        resolve_subjects(folder / "nope", ["20"])


def test_split_subjects_uses_an_explicit_list_exactly(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning about the paper's missing subjects
        assert split_subjects(folder, "train", ["20", "49"]) == ["20", "49"]
        assert split_subjects(folder, "test", ["49"]) == ["49"]
    assert split_subjects(folder, "val") == list(SPLITS["val"])  # default: the paper's split
    with pytest.raises(ValueError, match="split must be"):
        split_subjects(folder, "training", ["20"])


def test_simulated_dataset_draws_only_the_explicit_subjects(folder):
    config = brainweb_config(folder)
    dataset = SimulatedDataset(config, "train", 6, seed=1, subjects=["20", 49])
    assert dataset.anatomy.subjects == ["20", "49"]
    drawn = {int(dataset[i]["subject"]) for i in range(len(dataset))}
    assert drawn <= {20, 49} and len(drawn) == 2
    only = SimulatedDataset(config, "val", 2, seed=1, subjects=["49"])
    assert {int(s["subject"]) for s in only} == {49}
    paper = SimulatedDataset(config, "val", 1, seed=1)
    assert paper.anatomy.subjects == list(SPLITS["val"])
    with pytest.raises(FileNotFoundError, match=r"\['18'\]"):
        SimulatedDataset(config, "train", 1, subjects=["20", "18"])


def test_subjects_need_brainweb_anatomy():
    with pytest.raises(ValueError, match="need anatomy 'brainweb'"):
        SimulatedDataset(SimulationConfig(size=16), "train", 1, subjects=["20"])


def test_cli_simulate_with_subjects(folder, tmp_path, capsys):
    out = tmp_path / "train.h5"
    main(
        [
            "simulate",
            "--out",
            str(out),
            "--split",
            "train",
            "--n-samples",
            "4",
            "--size",
            "16",
            "--coils",
            "2",
            "--brainweb",
            str(folder),
            "--subjects",
            "20,49",
            "--quiet",
        ]
    )
    with h5py.File(out) as f:
        assert set(f["subject"][()].tolist()) <= {20, 49}
        config = json.loads(f.attrs["config"])
        assert config["anatomy"] == "brainweb" and config["subjects"] == {"train": ["20", "49"]}
    assert "wrote 4 train samples" in capsys.readouterr().out


def test_cli_simulate_refuses_subjects_without_brainweb(tmp_path):
    out = tmp_path / "x.h5"
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--out", str(out), "--subjects", "20,49", "--quiet"])
    assert "--subjects needs --brainweb" in str(exit_info.value.code)
    assert not out.exists()


def test_cli_simulate_names_missing_subjects(folder, tmp_path):
    with pytest.raises(SystemExit, match=r"^pinqi simulate: BrainWeb subjects \['04'\]"):
        main(
            [
                "simulate",
                "--out",
                str(tmp_path / "x.h5"),
                "--brainweb",
                str(folder),
                "--subjects",
                "20,04",
                "--quiet",
            ]
        )
    assert not (tmp_path / "x.h5").exists()


def test_subjects_per_split_in_the_simulation_config(folder):
    """``data.subjects`` of a preset selects the subjects of each split; others keep the paper's."""
    config = SimulationConfig(
        size=16,
        fov_mm=20.0,
        anatomy="brainweb",
        brainweb_dir=str(folder),
        subjects={"test": [20, "49"]},
    )
    assert config.subjects == {"test": ("20", "49")}
    assert SimulatedDataset(config, "test", 2).anatomy.subjects == ["20", "49"]
    assert SimulatedDataset(config, "val", 2).anatomy.subjects == ["05"]
    assert SimulationConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match=r"subjects \['20'\] are in more than one split"):
        SimulationConfig(
            anatomy="brainweb", brainweb_dir="x", subjects={"test": ["20"], "train": ["20"]}
        )
    with pytest.raises(ValueError, match="need anatomy 'brainweb'"):
        SimulationConfig(subjects={"test": ["20"]})
    with pytest.raises(ValueError, match="unknown splits"):
        SimulationConfig(anatomy="brainweb", brainweb_dir="x", subjects={"tset": ["20"]})
