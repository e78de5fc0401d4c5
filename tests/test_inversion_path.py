"""An inversion-recovery protocol through the whole learned path (issue 19, part 4): a tiny
inversion-ab model, a measured-like IR series undersampled with its model recorded, and
reconstructed with the residual check on."""

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from pinqi.cli import main
from pinqi.config import ExperimentConfig
from pinqi.data.datasets import H5Dataset, SimulatedDataset
from pinqi.data.simulation import SimulationConfig
from pinqi.physics import signal_model
from pinqi.training.run import train

from test_training import TINY

TI = (0.1, 0.3, 0.6, 1.0, 2.0, 4.0)


@pytest.fixture(scope="module")
def ir_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("ir")
    values = {
        **TINY,
        "data": {**TINY["data"], "size": 32, "signal_model": "inversion-ab", "tau": list(TI)},
        "optim": {**TINY["optim"], "max_epochs": 1, "pretrain_epochs": 0},
    }
    return train(ExperimentConfig.from_dict(values), root / "run")


def write_ir_series(path):
    """Complex IR images of a simulated slice (a = M0, b = -1.9 M0) as a 4D NIfTI."""
    sample = SimulatedDataset(SimulationConfig(size=32), "test", 1, seed=5)[0]
    m0 = torch.complex(sample["params"][0], sample["params"][1])
    params = torch.stack([m0.real, m0.imag, -1.9 * m0.real, -1.9 * m0.imag, sample["params"][2]])
    images = signal_model("inversion-ab", torch.tensor(TI))(params[None])[0]
    volume = np.transpose(images.numpy(), (2, 1, 0))[:, ::-1, None]  # (x, y, 1, n_ti)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(volume), np.eye(4)), path)
    return sample


def test_an_ir_series_is_undersampled_and_reconstructed_with_the_check(ir_model, tmp_path):
    write_ir_series(tmp_path / "ir.nii.gz")
    data = tmp_path / "ir.h5"
    delays = ",".join(map(str, TI))
    main(
        [
            "undersample",
            "--images",
            str(tmp_path / "ir.nii.gz"),
            "--tau",
            delays,
            "--size",
            "32",
            "--model",
            "inversion-ab",
            "--out",
            str(data),
        ]
    )
    assert H5Dataset(data).config.signal_model == "inversion-ab"
    main(
        [
            "reconstruct",
            "--checkpoint",
            str(ir_model),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "maps"),
        ]
    )
    with h5py.File(tmp_path / "maps" / "params.h5") as f:
        params = f["params"][()]
        residuals = [f[name][()] for name in ("kspace_residual", "kspace_residual_fit")]
        ratio = f["residual_ratio"][()]
    assert params.shape == (1, 5, 32, 32) and np.isfinite(params).all()
    # the check ran with the plain inversion-ab fit, which explains the noise-free series
    assert residuals[1][0] < 0.2 and residuals[0][0] > residuals[1][0]
    assert ratio[0] == pytest.approx(residuals[0][0] / residuals[1][0], rel=1e-5)
    # the untrained-like tiny model is far off: flagged, and --adapt fine-tunes it on the slice
    assert ratio[0] > 1.5
    main(["reconstruct", "--checkpoint", str(ir_model), "--data", str(data), "--out",
          str(tmp_path / "adapted"), "--adapt", "--adapt-steps", "20"])  # fmt: skip
    with h5py.File(tmp_path / "adapted" / "params.h5") as f:
        assert bool(f["adapted"][0]) and f["adapt_steps"][0] > 0
        assert f["residual_ratio"][0] < f["residual_ratio_unadapted"][0]
        assert f["params"].shape == (1, 5, 32, 32)


def test_a_saturation_model_refuses_an_ir_series(tmp_path):
    write_ir_series(tmp_path / "ir.nii.gz")
    data = tmp_path / "ir.h5"
    main(
        [
            "undersample",
            "--images",
            str(tmp_path / "ir.nii.gz"),
            "--tau",
            ",".join(map(str, TI)),
            "--size",
            "96",
            "--model",
            "inversion-ab",
            "--out",
            str(data),
        ]
    )
    with pytest.raises(SystemExit, match="inversion-ab"):
        main(
            [
                "reconstruct",
                "--checkpoint",
                "default",
                "--data",
                str(data),
                "--out",
                str(tmp_path / "maps"),
            ]
        )


def test_evaluate_an_inversion_ab_model_on_simulated_ir_data(ir_model, tmp_path):
    delays = ",".join(map(str, TI))
    main(["simulate", "--out", str(tmp_path / "ir.h5"), "--n-samples", "2", "--size", "32",
          "--seed", "4", "--quiet", "--set", f"tau=[{delays}]", "--set",
          "signal_model=inversion-ab"])  # fmt: skip
    main(["evaluate", "--checkpoint", str(ir_model), "--data", str(tmp_path / "ir.h5"),
          "--out", str(tmp_path / "eval")])  # fmt: skip
    rows = (tmp_path / "eval" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 and "t1_nrmse" in rows[0]
    assert "Data check:" in (tmp_path / "eval" / "summary.md").read_text()
