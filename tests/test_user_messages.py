"""Bad files and names, as users meet them: one line that says what is wrong (issue 19)."""

import io
import pickle

import h5py
import numpy as np
import pytest
import torch

from pinqi.api import fit_maps
from pinqi.cli import main


def run_reconstruct(tmp_path, checkpoint, data):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "reconstruct",
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "maps"),
            ]
        )
    message = str(exit_info.value.code)
    assert "\n" not in message and "Traceback" not in message
    assert not (tmp_path / "maps").exists()
    return message


@pytest.mark.parametrize(
    "content",
    [b"not a checkpoint at all", b"garbage\n", b"", b"PK\x03\x04 not a zip", bytes(range(256))],
)
def test_a_corrupt_checkpoint_is_one_line(tmp_path, content):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(content)
    message = run_reconstruct(tmp_path, corrupt, tmp_path / "data.h5")
    assert "corrupt.pt is not a readable checkpoint" in message


class _OpensAFile:
    """Unpickled without restrictions, it creates ``path``: code run by reading a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


@pytest.mark.parametrize("save", [pickle.dumps, lambda value: _torch_bytes(value)])
def test_a_checkpoint_cannot_run_code_when_read(tmp_path, save):
    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile.pt"
    hostile.write_bytes(save({"state_dict": _OpensAFile(marker)}))
    message = run_reconstruct(tmp_path, hostile, tmp_path / "data.h5")
    assert "hostile.pt is not a readable checkpoint" in message
    assert not marker.exists()


def _torch_bytes(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def test_a_file_of_other_content_is_no_model(tmp_path):
    other = tmp_path / "list.pt"
    torch.save([1, 2, 3], other)
    message = run_reconstruct(tmp_path, other, tmp_path / "data.h5")
    assert "neither a pinqi Lightning checkpoint nor an exported model" in message


def test_an_unknown_model_name_lists_the_shipped_ones(tmp_path):
    message = run_reconstruct(tmp_path, "defualt", tmp_path / "data.h5")
    assert "no shipped model or file 'defualt'" in message
    assert "default" in message.split("shipped models:")[1]


def test_data_that_is_not_hdf5_is_named(tmp_path):
    series = tmp_path / "series.nii.gz"
    series.write_bytes(b"\x1f\x8b not really a nifti either")
    message = run_reconstruct(tmp_path, "default", series)
    assert "series.nii.gz is not an HDF5 data set" in message
    assert "pinqi undersample" in message


def _one_line_error(arguments: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    message = str(exit_info.value.code)
    assert "\n" not in message and "Traceback" not in message
    return message


def _damaged_data_files(folder) -> dict[str, str]:
    """File name -> the message part expected for it: HDF5 files that are not pinqi's data."""
    main(["simulate", "--out", str(folder / "good.h5"), "--n-samples", "1", "--size", "32",
          "--quiet"])  # fmt: skip
    good = (folder / "good.h5").read_bytes()
    (folder / "truncated.h5").write_bytes(good[: len(good) // 3])
    with h5py.File(folder / "no_coils.h5", "w") as f:
        for name in ("kspace", "mask", "tau"):
            f[name] = np.zeros(2)
    with h5py.File(folder / "no_config.h5", "w") as f:
        with h5py.File(folder / "good.h5") as source:
            for name in ("kspace", "mask", "coil_maps", "tau"):
                source.copy(name, f)
    (folder / "series.nii.gz").write_bytes(b"\x1f\x8b not HDF5")
    return {
        "truncated.h5": "truncated.h5 is a damaged or truncated HDF5 file",
        "no_coils.h5": "no_coils.h5 lacks the datasets ['coil_maps']",
        "no_config.h5": "no_config.h5 lacks the attribute 'config'",
        "series.nii.gz": "series.nii.gz is not an HDF5 data set",
    }


def test_damaged_or_foreign_data_files_are_one_line_for_every_reader(tmp_path):
    expected = _damaged_data_files(tmp_path)
    for name, part in expected.items():
        data = str(tmp_path / name)
        message = _one_line_error(["reconstruct", "--data", data, "--out", str(tmp_path / "r")])
        assert part in message, message
        if name != "no_config.h5":  # the plain fit reads no simulation settings
            message = _one_line_error(["fit", "--data", data, "--out", str(tmp_path / "f")])
            assert part in message, message
    # ISMRMRD raw data is another kind of HDF5 file: pinqi's own data is not it
    message = _one_line_error(
        ["import-ismrmrd", "--raw", str(tmp_path / "good.h5"), "--out", str(tmp_path / "i.h5")]
    )
    assert "good.h5 lacks the datasets ['dataset/xml', 'dataset/data'] (ISMRMRD" in message
    message = _one_line_error(
        ["import-ismrmrd", "--raw", str(tmp_path / "truncated.h5"), "--out", str(tmp_path / "i")]
    )
    assert "damaged or truncated" in message


def test_a_delay_list_starting_with_a_minus_reaches_the_delay_check(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--images",
                str(tmp_path / "none.nii.gz"),
                "--tau",
                "-0.1,0.5",
                "--out",
                str(tmp_path / "o"),
            ]
        )
    # the value was taken (argparse would stop with "expected one argument" otherwise)
    assert "image series not found" in str(exit_info.value.code)


def test_help_of_every_command_names_its_inputs(capsys):
    for command, expected in [
        ("export", "model card"),
        ("info", "learnable weights"),
        ("evaluate", "pinqi undersample or pinqi import-ismrmrd"),
        ("undersample", "4D (x, y, z = 1, delay)"),
    ]:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert expected in " ".join(capsys.readouterr().out.split()), command


@pytest.mark.parametrize(
    ("text", "override", "expected"),
    [
        ("model: [unclosed\n", None, "bad.yaml is not valid YAML (expected ',' or ']'"),
        ("- a\n- b\n", None, "a config is a mapping of sections"),
        ("data: 5\n", None, "config section 'data' must be a mapping of keys, got 5"),
        ("{}\n", "optim.batch_size=[1", "override 'optim.batch_size=[1' is not valid YAML"),
    ],
)
def test_a_bad_preset_or_override_is_one_line(tmp_path, text, override, expected):
    preset = tmp_path / "bad.yaml"
    preset.write_text(text)
    extra = ["--set", override] if override else []
    message = _one_line_error(
        ["train", "--config", str(preset), *extra, "--out", str(tmp_path / "run")]
    )
    assert expected in message, message
    assert not (tmp_path / "run").exists()


def test_a_bad_comparison_file_is_one_line(tmp_path):
    comparison = tmp_path / "compare.yaml"
    comparison.write_text("methods: [\n")
    message = _one_line_error(["compare", "--config", str(comparison), "--out", str(tmp_path)])
    assert "compare.yaml is not valid YAML" in message
    comparison.write_text("- a\n")
    message = _one_line_error(["compare", "--config", str(comparison), "--out", str(tmp_path)])
    assert "compare.yaml must hold a mapping" in message


def test_a_fit_with_too_few_distinct_delays_is_refused():
    images = np.ones((2, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"saturation fit .* at least 2 distinct delays, got 1"):
        fit_maps(images, [1.0, 1.0], model="saturation")
    with pytest.raises(ValueError, match=r"inversion-ab fit has the unknowns a, b, T1"):
        fit_maps(np.ones((2, 4, 4), np.float32), [0.1, 1.0], model="inversion-ab")


def test_exporting_a_shipped_model_says_it_is_exported_already(tmp_path):
    message = _one_line_error(["export", "--checkpoint", "default", "--out", str(tmp_path / "m")])
    assert "'default' is a shipped model, exported already" in message
