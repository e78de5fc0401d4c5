import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from pinqi.cli import main
from pinqi.data.datasets import H5Dataset, SimulatedDataset
from pinqi.data.simulation import SimulationConfig
from pinqi.data.undersample import load_series
from pinqi.evaluation.metrics import parameter_metrics
from pinqi.physics import SaturationRecovery

TAU = (0.5, 1.0, 1.5, 2.0, 8.0)


def write_series(path, scale=1.0, magnitude=False, seed=4):
    """A 'measured' series: noise-free images of a simulated test slice, arbitrary scale."""
    sample = SimulatedDataset(SimulationConfig(size=96), "test", 1, seed=seed)[0]
    images = SaturationRecovery(TAU)(sample["params"][None])[0] * scale
    data = images.abs() if magnitude else images
    volume = np.transpose(data.numpy(), (2, 1, 0))[:, ::-1]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(volume), np.eye(4)), path)
    return sample


def test_series_roundtrip_and_errors(tmp_path):
    write_series(tmp_path / "s.nii.gz")
    assert load_series(tmp_path / "s.nii.gz").shape == (5, 96, 96)
    with pytest.raises(ValueError, match="no readable DICOM"):
        load_series(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_series(tmp_path / "none.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((4, 4), np.float32), np.eye(4)), tmp_path / "flat.nii.gz")
    with pytest.raises(ValueError, match="3D"):
        load_series(tmp_path / "flat.nii.gz")


def test_undersample_is_scale_invariant_and_reconstructs(tmp_path):
    truth = write_series(tmp_path / "a.nii.gz", scale=1.0)
    write_series(tmp_path / "b.nii.gz", scale=1000.0)
    common = ["--tau", ",".join(map(str, TAU)), "--size", "96", "--seed", "3"]
    main(
        [
            "undersample",
            "--images",
            str(tmp_path / "a.nii.gz"),
            "--out",
            str(tmp_path / "a.h5"),
            *common,
        ]
    )
    main(
        [
            "undersample",
            "--images",
            str(tmp_path / "b.nii.gz"),
            "--out",
            str(tmp_path / "b.h5"),
            *common,
        ]
    )
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        np.testing.assert_allclose(a["kspace"][()], b["kspace"][()], rtol=1e-4, atol=1e-6)
        assert b.attrs["intensity_scale"] == pytest.approx(
            1000 * a.attrs["intensity_scale"], rel=1e-4
        )
        assert "params" not in a
    stored = H5Dataset(tmp_path / "b.h5")
    assert not stored.has_ground_truth and "params" not in stored[0]
    with pytest.raises(SystemExit, match="no ground truth"):
        main(["evaluate", "--data", str(tmp_path / "b.h5"), "--out", str(tmp_path / "ev")])
    main(["reconstruct", "--data", str(tmp_path / "b.h5"), "--out", str(tmp_path / "rec")])
    with h5py.File(tmp_path / "rec" / "params.h5") as f:
        params = torch.from_numpy(f["params"][()])
    metrics = parameter_metrics(params, truth["params"][None], truth["brain_mask"][None])
    assert float(metrics["t1_nrmse"]) < 0.35  # T1 does not depend on the intensity scale


def test_undersample_rejects_wrong_number_of_delays(tmp_path):
    write_series(tmp_path / "s.nii.gz")
    with pytest.raises(SystemExit, match="3 delays given but the series has 5 frames"):
        main(
            [
                "undersample",
                "--images",
                str(tmp_path / "s.nii.gz"),
                "--tau",
                "1,2,3",
                "--out",
                str(tmp_path / "x.h5"),
            ]
        )


def write_dicom_series(folder, images):
    """Single-frame 16-bit DICOM files, one per delay, in shuffled file order."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir()
    for number in (3, 1, 5, 2, 4):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"im{number}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.InstanceNumber = "MR", number
        ds.Rows, ds.Columns = images.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 0.5, 0
        ds.PixelData = (images[number - 1] * 2).astype(np.uint16).tobytes()
        ds.save_as(folder / f"im{number}.dcm", enforce_file_format=True)


def test_dicom_series_is_read_in_instance_order(tmp_path):
    images = np.stack([np.full((8, 6), 100.0 * (k + 1)) for k in range(5)])
    images[:, 2, 3] += 7
    write_dicom_series(tmp_path / "dicom", images)
    (tmp_path / "dicom" / "notes.txt").write_text("not DICOM")
    series = load_series(tmp_path / "dicom")
    assert series.shape == (5, 8, 6)
    np.testing.assert_allclose(series.real.numpy(), images)
    assert float(series.imag.abs().max()) == 0


def test_undersample_keeps_the_field_of_view_and_says_it_resamples(tmp_path, capsys):
    import json

    volume = np.ones((64, 64, 5), np.float32) * np.arange(1, 6, dtype=np.float32)
    nib.save(nib.Nifti1Image(volume, np.diag([2.0, 2.0, 5.0, 1.0])), tmp_path / "s.nii.gz")
    main(
        [
            "undersample",
            "--images",
            str(tmp_path / "s.nii.gz"),
            "--tau",
            "0.5,1,1.5,2,8",
            "--size",
            "32",
            "--out",
            str(tmp_path / "s.h5"),
        ]
    )
    assert "resampling 64x64 (2 mm pixels) to 32x32 (4 mm)" in capsys.readouterr().out
    with h5py.File(tmp_path / "s.h5") as f:
        assert json.loads(f.attrs["config"])["fov_mm"] == 128.0
