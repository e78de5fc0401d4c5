import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from pinqi.cli import main
from pinqi.data.datasets import H5Dataset, SimulatedDataset
from pinqi.data.simulation import SimulationConfig
from pinqi.data.undersample import resize, series_images
from pinqi.io.grid import SourceGrid
from pinqi.io.series import read_series
from pinqi.metrics import parameter_metrics
from pinqi.physics import SaturationRecovery

from conftest import assert_accurate

TAU = (0.5, 1.0, 1.5, 2.0, 8.0)


def write_series(path, scale=1.0, magnitude=False, seed=4):
    """A 'measured' series: noise-free images of a simulated test slice, arbitrary scale."""
    sample = SimulatedDataset(SimulationConfig(size=96), "test", 1, seed=seed)[0]
    images = SaturationRecovery(TAU)(sample["params"][None])[0] * scale
    data = images.abs() if magnitude else images
    volume = np.transpose(data.numpy(), (2, 1, 0))[:, ::-1]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(volume), np.eye(4)), path)
    return sample


def test_series_images_roundtrip_and_errors(tmp_path):
    sample = write_series(tmp_path / "s.nii.gz")
    images, grid = series_images(read_series(tmp_path / "s.nii.gz", TAU))
    assert images.shape == (5, 96, 96) and grid.shape == (96, 96)
    expected = SaturationRecovery(TAU)(sample["params"][None])[0]
    torch.testing.assert_close(images, expected.to(torch.complex64))  # same orientation
    volume = np.zeros((8, 8, 3, 5), np.float32)
    volume[2:6, 2:6] = 1
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "slab.nii.gz")
    with pytest.raises(ValueError, match="takes one slice, the series has 3"):
        series_images(read_series(tmp_path / "slab.nii.gz", TAU))


def test_grid_maps_back_and_keeps_positions():
    affine = np.array(
        [[0.0, -1.8, 0.0, 90.0], [2.2, 0.0, 0.3, -100.0], [0.0, 0.0, 4.0, 12.0], [0, 0, 0, 1]]
    )
    grid = SourceGrid(affine, (40, 30))
    voxels = np.random.default_rng(0).normal(size=(2, 40, 30))
    assert grid.to_model(voxels).shape == (2, 30, 40)
    np.testing.assert_array_equal(grid.from_model(grid.to_model(voxels)), voxels)
    # a field linear in patient space stays linear: resampled pixels sit where the new
    # affine says they are (shrinking by 2 and enlarging by 1.5 along each axis)
    square = SourceGrid(affine, (40, 40))

    def linear_field(grid: SourceGrid) -> np.ndarray:
        i, j = np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij")
        a = grid.affine
        world = a[:3, 0, None, None] * i + a[:3, 1, None, None] * j + a[:3, 3, None, None]
        return grid.to_model(world[1] + 0.5 * world[0])

    field = torch.from_numpy(linear_field(square)[None]).to(torch.complex64)
    for size in (20, 60):
        resampled = resize(field, size).real.numpy()[0]
        expected = linear_field(square.resampled(size))
        inner = slice(2, -2)
        np.testing.assert_allclose(resampled[inner, inner], expected[inner, inner], atol=2e-3)
    coarse = grid.resampled(20)
    assert coarse.voxel_mm == pytest.approx((2.2 * 2, 1.8 * 1.5))


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
    # T1 does not depend on the intensity scale: nRMSE ~0.14, where a constant, transposed,
    # flipped or rescaled map is >= 0.17 off
    t1 = 1 / params[0, -1].clamp(min=0.1)
    error = assert_accurate(t1, 1 / truth["params"][-1], truth["brain_mask"], 0.16)
    assert float(metrics["t1_nrmse"]) == pytest.approx(error, rel=1e-4)


def test_undersample_rejects_wrong_number_of_delays(tmp_path):
    write_series(tmp_path / "s.nii.gz")
    with pytest.raises(SystemExit, match="holds 5 images but 3 delays were given"):
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
    series, _ = series_images(read_series(tmp_path / "dicom", TAU))
    assert series.shape == (5, 8, 6)
    np.testing.assert_allclose(series.real.numpy(), images)  # DICOM rows stay rows
    assert float(series.imag.abs().max()) == 0


def test_undersample_a_dicom_folder_like_the_same_nifti(tmp_path):
    """undersample --images <DICOM folder>: the k-space of the same images as a NIfTI file."""
    sample = write_series(tmp_path / "s.nii.gz", scale=1000.0, magnitude=True, seed=4)
    images = SaturationRecovery(TAU)(sample["params"][None])[0].abs().numpy() * 1000
    write_dicom_series(tmp_path / "dicom", images)  # 16 bit, 0.5 per unit: within 0.25
    common = ["--tau", ",".join(map(str, TAU)), "--size", "96", "--seed", "3"]
    for name, source in (("dicom", tmp_path / "dicom"), ("nifti", tmp_path / "s.nii.gz")):
        main(
            ["undersample", "--images", str(source), "--out", str(tmp_path / f"{name}.h5"), *common]
        )
    with h5py.File(tmp_path / "dicom.h5") as a, h5py.File(tmp_path / "nifti.h5") as b:
        dicom, nifti = a["kspace"][()], b["kspace"][()]
        assert a.attrs["intensity_scale"] == pytest.approx(b.attrs["intensity_scale"], rel=1e-3)
        np.testing.assert_array_equal(a["mask"][()], b["mask"][()])
    error = np.linalg.norm(dicom - nifti) / np.linalg.norm(nifti)
    assert error < 1e-3
    # the images transposed (DICOM rows read as columns) would be far off
    transposed = tmp_path / "t.nii.gz"
    swapped = np.swapaxes(images, -1, -2)  # as write_series stores model images:
    volume = np.transpose(swapped, (2, 1, 0))[:, ::-1]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(volume), np.eye(4)), transposed)
    main(["undersample", "--images", str(transposed), "--out", str(tmp_path / "t.h5"), *common])
    with h5py.File(tmp_path / "t.h5") as f:
        assert np.linalg.norm(f["kspace"][()] - nifti) / np.linalg.norm(nifti) > 0.1


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


def test_maps_go_back_on_the_scan(tmp_path):
    """reconstruct writes the scan's affine (scaled), M0 in the scan's intensity, and with
    --input-grid the scan's own matrix; fit --data agrees."""
    sample = SimulatedDataset(SimulationConfig(size=96), "test", 1, seed=4)[0]
    images = SaturationRecovery(TAU)(sample["params"][None])[0] * 500
    voxels = np.swapaxes(images.numpy()[:, ::-1, :], -1, -2)  # (5, x, y), y up
    affine = np.array([[2.0, 0, 0, -96.0], [0, 2.0, 0, -80.0], [0, 0, 3.0, 20.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.moveaxis(voxels, 0, -1), affine), tmp_path / "s.nii.gz")
    main(
        [
            "undersample",
            "--images",
            str(tmp_path / "s.nii.gz"),
            "--tau",
            ",".join(map(str, TAU)),
            "--size",
            "48",
            "--out",
            str(tmp_path / "s.h5"),
        ]
    )
    common = ["--data", str(tmp_path / "s.h5"), "--allow-other-protocol", "--no-check"]
    main(["reconstruct", *common, "--out", str(tmp_path / "rec")])
    t1 = nib.load(tmp_path / "rec" / "t1.nii.gz")
    assert t1.shape == (48, 48, 1)
    np.testing.assert_allclose(t1.affine, SourceGrid(affine, (96, 96)).resampled(48).affine)
    assert b"T1 [s]" in t1.header["descrip"].tobytes()
    m0 = nib.load(tmp_path / "rec" / "m0.nii.gz").get_fdata()
    true_m0 = np.abs(images[-1].numpy()) / (1 - np.exp(-8 * sample["params"][-1].numpy()))
    assert np.percentile(m0, 99) == pytest.approx(np.percentile(true_m0, 99), rel=0.2)

    main(["reconstruct", *common, "--out", str(tmp_path / "back"), "--input-grid"])
    back = nib.load(tmp_path / "back" / "t1.nii.gz")
    assert back.shape == (96, 96, 1)
    np.testing.assert_allclose(back.affine, affine)
    # the values: the 48x48 maps interpolated bilinearly onto the scan's 2 mm pixels (voxel
    # (i, j) of 96 sits at (i - 0.5) / 2 of 48), not transposed or flipped on the way
    for name in ("t1", "m0"):
        coarse = nib.load(tmp_path / "rec" / f"{name}.nii.gz").get_fdata()[..., 0]
        fine = nib.load(tmp_path / "back" / f"{name}.nii.gz").get_fdata()[..., 0]
        expected = upsample_twice(coarse)
        np.testing.assert_allclose(fine, expected, rtol=1e-4, atol=1e-4 * np.abs(coarse).max())
        for wrong in (upsample_twice(coarse.T), upsample_twice(coarse[::-1])):
            assert np.abs(fine - wrong).max() > 0.1 * np.abs(coarse).max()

    main(["fit", "--data", str(tmp_path / "s.h5"), "--out", str(tmp_path / "fit")])
    fitted = nib.load(tmp_path / "fit" / "t1.nii.gz")
    np.testing.assert_allclose(fitted.affine, t1.affine)
    np.testing.assert_allclose(
        nib.load(tmp_path / "fit" / "m0.nii.gz").get_fdata().max(), m0.max(), rtol=0.3
    )


def upsample_twice(image: np.ndarray) -> np.ndarray:
    """Bilinear 2x upsampling with pixel centres at (i - 0.5) / 2, edges clamped."""

    def along_rows(a: np.ndarray) -> np.ndarray:
        padded = np.concatenate([a[:1], a, a[-1:]])
        out = np.empty((2 * len(a), *a.shape[1:]))
        out[0::2] = 0.25 * padded[:-2] + 0.75 * a  # centre (2k - 0.5) / 2 = k - 0.25
        out[1::2] = 0.75 * a + 0.25 * padded[2:]  # centre k + 0.25
        return out

    return along_rows(along_rows(image).T).T


def test_input_grid_needs_a_scan(tmp_path):
    main(
        [
            "simulate",
            "--out",
            str(tmp_path / "sim.h5"),
            "--n-samples",
            "1",
            "--size",
            "96",
            "--quiet",
        ]
    )
    with pytest.raises(SystemExit, match="carries no scan grid"):
        main(
            [
                "reconstruct",
                "--data",
                str(tmp_path / "sim.h5"),
                "--out",
                str(tmp_path / "r"),
                "--no-check",
                "--input-grid",
            ]
        )
