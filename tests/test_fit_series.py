"""``pinqi fit --images``: image series (NIfTI, DICOM; complex, magnitude) fitted on their grid."""

from itertools import pairwise

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from pinqi.cli import main
from pinqi.evaluation.fit import fit_images
from pinqi.evaluation.series_fit import fit_series
from pinqi.io.series import read_series
from pinqi.physics import InversionRecoveryAB

TAU_SR = (0.5, 1.0, 1.5, 2.0, 8.0)
TI = (0.05, 0.15, 0.3, 0.5, 0.8, 1.2, 1.8, 2.6, 4.0)
AFFINE = np.array(
    [[0.0, -1.5, 0.0, 90.0], [1.5, 0.0, 0.0, -80.0], [0.0, 0.0, 4.0, 12.0], [0.0, 0.0, 0.0, 1.0]]
)


def t1_grid(shape=(12, 10), low=0.2, high=4.0):
    return np.geomspace(low, high, np.prod(shape)).reshape(shape)


def saturation_series(t1, scale=1000.0, phase=0.7):
    """Complex SR images ``(x, y, n_tau)`` of M0 = scale exp(i phase)."""
    tau = np.asarray(TAU_SR)
    signal = 1 - np.exp(-tau / t1[..., None])
    return (scale * np.exp(1j * phase) * signal).astype(np.complex64)


def inversion_magnitude(t1, ti=TI, a=800.0, efficiency=0.95, sigma=0.0, seed=0):
    """Magnitude IR images ``(x, y, n_ti)`` with Rician noise of ``sigma``."""
    ti = np.asarray(ti)
    signal = a * (1 - (1 + efficiency) * np.exp(-ti / t1[..., None]))
    rng = np.random.default_rng(seed)
    noisy = signal + sigma * (
        rng.standard_normal(signal.shape) + 1j * rng.standard_normal(signal.shape)
    )
    return np.abs(noisy).astype(np.float32)


def save(path, volume, affine=AFFINE):
    nib.save(nib.Nifti1Image(volume, affine), path)
    return path


def test_complex_nifti_maps_keep_grid_affine_and_intensity(tmp_path):
    t1 = t1_grid()
    path = save(tmp_path / "sr.nii.gz", saturation_series(t1))
    main(
        [
            "fit",
            "--images",
            str(path),
            "--tau",
            "0.5,1,1.5,2,8",
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ]
    )
    image = nib.load(tmp_path / "out" / "t1.nii.gz")
    assert image.shape == (*t1.shape, 1)  # maps are (x, y, slices), as pinqi reconstruct's
    np.testing.assert_allclose(image.affine, AFFINE)
    np.testing.assert_allclose(np.asarray(image.dataobj)[..., 0], t1, rtol=1e-3)
    assert b"T1 [s]" in image.header["descrip"].tobytes()
    m0 = np.asarray(nib.load(tmp_path / "out" / "m0.nii.gz").dataobj)
    np.testing.assert_allclose(m0, 1000.0, rtol=1e-3)  # the input's intensity scale
    with h5py.File(tmp_path / "out" / "params.h5") as f:
        assert f["t1"].attrs["unit"] == "s" and list(f.attrs["tau_s"]) == list(TAU_SR)
        np.testing.assert_allclose(f["m0_phase"][()], 0.7, atol=1e-3)


def test_magnitude_inversion_recovery_with_nulls_everywhere_within_one_percent(tmp_path):
    t1 = t1_grid((20, 10))
    # the null TI = T1 ln(1 + efficiency) falls between every pair of delays somewhere
    null = t1 * np.log(1.95)
    assert all(((null > lo) & (null < hi)).any() for lo, hi in pairwise(TI))
    path = save(tmp_path / "ir.nii.gz", inversion_magnitude(t1, sigma=0.4))
    tau = ",".join(map(str, TI))
    main(
        [
            "fit",
            "--images",
            str(path),
            "--tau",
            tau,
            "--model",
            "inversion-ab",
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ]
    )
    fitted = np.asarray(nib.load(tmp_path / "o" / "t1.nii.gz").dataobj)[..., 0]
    assert np.abs(fitted / t1 - 1).max() < 0.01
    efficiency = np.asarray(nib.load(tmp_path / "o" / "inversion_efficiency.nii.gz").dataobj)
    np.testing.assert_allclose(efficiency, 0.95, atol=0.01)


def test_complex_model_on_magnitude_would_miss_the_null():
    """Why magnitude inversion data take the polarity-restored path."""
    t1 = t1_grid((6, 5))
    magnitude = np.moveaxis(inversion_magnitude(t1), -1, 0)
    model = InversionRecoveryAB(torch.tensor(TI))
    images = torch.from_numpy(magnitude / 800).to(torch.complex64)[None]
    p = fit_images(model, images)
    wrong = 1 / p[0, -1].clamp(min=0.1).numpy()
    assert np.abs(wrong / t1 - 1).max() > 0.2


def test_look_locker_writes_t1_and_t1_star(tmp_path):
    t1, a, b = 1.2, 500.0, -900.0
    t1_star = t1 / (-b / a - 1)
    ti = np.array([0.1, 0.18, 0.26, 1.1, 1.18, 2.1, 2.18, 3.1])
    signal = np.abs(a + b * np.exp(-ti / t1_star))
    volume = np.broadcast_to(signal, (4, 3, len(ti))).astype(np.float32)
    path = save(tmp_path / "molli.nii.gz", volume)
    main(
        [
            "fit",
            "--images",
            str(path),
            "--tau",
            ",".join(map(str, ti)),
            "--model",
            "look-locker",
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ]
    )
    np.testing.assert_allclose(
        np.asarray(nib.load(tmp_path / "o" / "t1.nii.gz").dataobj), t1, rtol=1e-3
    )
    np.testing.assert_allclose(
        np.asarray(nib.load(tmp_path / "o" / "t1_star.nii.gz").dataobj), t1_star, rtol=1e-3
    )


def test_four_d_nifti_and_mask(tmp_path):
    t1 = t1_grid((6, 5, 3))
    path = save(tmp_path / "sr4d.nii.gz", saturation_series(t1))
    series = read_series(path, TAU_SR)
    assert series.grid == (6, 5, 3) and not series.magnitude
    mask = np.zeros((6, 5, 3), dtype=bool)
    mask[2:4, 1:4, 1] = True
    result = fit_series(series, "saturation", mask, progress=False)
    np.testing.assert_allclose(result.maps["t1"][mask], t1[mask], rtol=1e-3)
    assert (result.maps["t1"][~mask] == 0).all()


def test_cli_fit_mask_fits_only_the_masked_voxels(tmp_path, capsys):
    t1 = t1_grid((6, 5, 2))
    path = save(tmp_path / "sr.nii.gz", saturation_series(t1))
    mask = np.zeros((6, 5, 2), dtype=np.uint8)
    mask[1:5, 2:4, 1] = 3  # non-zero = fit
    mask[0, 0, 0] = 1
    save(tmp_path / "mask.nii.gz", mask)
    argv = ["fit", "--images", str(path), "--tau", "0.5,1,1.5,2,8", "--quiet"]
    main([*argv, "--mask", str(tmp_path / "mask.nii.gz"), "--out", str(tmp_path / "o")])
    inside = mask != 0
    assert "; 9 voxels, median T1" in capsys.readouterr().out
    written = np.asarray(nib.load(tmp_path / "o" / "mask.nii.gz").dataobj)
    np.testing.assert_array_equal(written, inside)
    fitted = np.asarray(nib.load(tmp_path / "o" / "t1.nii.gz").dataobj)
    np.testing.assert_allclose(fitted[inside], t1[inside], rtol=1e-3)
    assert (fitted[~inside] == 0).all()
    # a mask on another grid, or a missing one, is refused before any output
    save(tmp_path / "small.nii.gz", mask[:4])
    with pytest.raises(SystemExit, match=r"^pinqi fit: mask has shape \(4, 5, 2\) but the series"):
        main([*argv, "--mask", str(tmp_path / "small.nii.gz"), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match=r"^pinqi fit: mask not found"):
        main([*argv, "--mask", str(tmp_path / "none.nii.gz"), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match=r"--mask need --images"):
        main(["fit", "--data", "d.h5", "--mask", str(tmp_path / "mask.nii.gz"), "--out", "x"])
    assert not (tmp_path / "x").exists()


def test_auto_mask_drops_background(tmp_path):
    t1 = t1_grid((8, 8), 0.5, 2.0)
    volume = saturation_series(t1)
    volume[:2] = 0.01 * (np.random.default_rng(0).standard_normal(volume[:2].shape))
    result = fit_series(
        read_series(save(tmp_path / "s.nii.gz", volume), TAU_SR), "saturation", progress=False
    )
    assert not result.mask[:2].any() and result.mask[2:].all()


def write_dicom(folder, name, pixels, instance, ti_ms=None, kind="M", position=0.0):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(folder / name), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.InstanceNumber = "MR", instance
    ds.ImageType = ["ORIGINAL", "PRIMARY", kind]
    if ti_ms is not None:
        ds.InversionTime = ti_ms
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-10.0, -20.0, position]
    ds.PixelSpacing = [2.0, 1.5]
    ds.SliceThickness = 5.0
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.round(pixels).astype(np.int16).tobytes()
    ds.save_as(folder / name, enforce_file_format=True)


def test_dicom_magnitude_phase_pairs_sorted_by_inversion_time(tmp_path):
    folder = tmp_path / "dicom"
    folder.mkdir()
    t1 = t1_grid((6, 4), 0.3, 2.5)  # (x = columns, y = rows)
    tau = np.asarray(TAU_SR)
    signal = 1000 * (1 - np.exp(-tau / t1[..., None]))
    phase = 0.5
    order = [3, 0, 4, 1, 2]  # files in an order unrelated to the delays
    for number, k in enumerate(order):
        rows_cols = signal[..., k].T
        write_dicom(folder, f"a{number}.dcm", rows_cols, 2 * number + 1, 1000 * tau[k], "M")
        write_dicom(
            folder,
            f"b{number}.dcm",
            np.full(rows_cols.shape, phase * 4096 / np.pi),
            2 * number + 2,
            1000 * tau[k],
            "P",
        )
    series = read_series(folder)
    np.testing.assert_allclose(series.tau, tau)
    assert series.grid == (6, 4) and not series.magnitude
    np.testing.assert_allclose(np.angle(series.images), phase, atol=1e-3)
    # voxel (i, j) -> RAS: x flips sign (LPS -> RAS), 1.5 mm columns, 2 mm rows
    np.testing.assert_allclose(series.affine @ [1, 1, 0, 1], [10 - 1.5, 20 - 2.0, 0, 1])
    result = fit_series(series, "saturation", progress=False)
    np.testing.assert_allclose(result.maps["t1"], t1, rtol=5e-3)


def test_dicom_without_inversion_time_needs_tau(tmp_path):
    folder = tmp_path / "dicom"
    folder.mkdir()
    for k in range(5):
        write_dicom(folder, f"im{k}.dcm", np.full((4, 3), 100.0 * (k + 1)), k + 1)
    with pytest.raises(ValueError, match="carry no InversionTime; give --tau"):
        read_series(folder)
    series = read_series(folder, TAU_SR)
    np.testing.assert_allclose(series.images[:, 0, 0], [100, 200, 300, 400, 500])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tau", "0.5,abc"], "--tau must be comma-separated numbers"),
        (["--tau", "0.5,1"], "holds 5 images but 2 delays were given"),
        ([], "NIfTI files carry no delays"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    path = save(tmp_path / "sr.nii.gz", saturation_series(t1_grid((4, 4))))
    with pytest.raises(SystemExit, match=message) as error:
        main(["fit", "--images", str(path), "--out", str(tmp_path / "o"), *args])
    assert str(error.value).startswith("pinqi fit: ") and "\n" not in str(error.value)
    assert not (tmp_path / "o").exists()


def test_missing_unreadable_and_zero_series(tmp_path):
    with pytest.raises(SystemExit, match="image series not found"):
        main(
            [
                "fit",
                "--images",
                str(tmp_path / "none.nii.gz"),
                "--tau",
                "1",
                "--out",
                str(tmp_path / "o"),
            ]
        )
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(SystemExit, match="not a readable NIfTI file"):
        main(
            [
                "fit",
                "--images",
                str(tmp_path / "bad.nii.gz"),
                "--tau",
                "1",
                "--out",
                str(tmp_path / "o"),
            ]
        )
    zero = save(tmp_path / "zero.nii.gz", np.zeros((4, 4, 5), np.float32))
    with pytest.raises(SystemExit, match=r"zero \(or NaN\) everywhere"):
        main(["fit", "--images", str(zero), "--tau", "0.5,1,1.5,2,8", "--out", str(tmp_path / "o")])
    infinite = np.ones((4, 4, 5), np.float32)
    infinite[0, 0, 0] = np.inf
    with pytest.raises(SystemExit, match="infinite values"):
        main(["fit", "--images", str(save(tmp_path / "inf.nii.gz", infinite)), "--tau",
              "0.5,1,1.5,2,8", "--out", str(tmp_path / "o")])  # fmt: skip


def test_nan_voxels_are_masked_out_or_named(tmp_path):
    """NaN voxels (e.g. outside a skull-stripped brain) are left out by the automatic mask;
    a mask that keeps them gets their count and the first place."""
    images = np.abs(saturation_series(t1_grid((6, 5), 0.4, 2.5)))
    images[0, 0, :] = np.nan
    images[2, 3, 1] = np.nan
    path = save(tmp_path / "nan.nii.gz", images)
    run = ["fit", "--images", str(path), "--tau", "0.5,1,1.5,2,8", "--quiet"]
    main([*run, "--out", str(tmp_path / "auto")])
    written = nib.load(tmp_path / "auto" / "mask.nii.gz").get_fdata()
    assert written.sum() == 28 and written[0, 0] == 0 and written[2, 3] == 0
    t1 = nib.load(tmp_path / "auto" / "t1.nii.gz").get_fdata()
    assert np.isfinite(t1).all()
    everything = save(tmp_path / "all.nii.gz", np.ones((6, 5), np.uint8))
    with pytest.raises(SystemExit, match=r"2 voxel\(s\) inside the mask are NaN.*\(0, 0\)"):
        main([*run, "--mask", str(everything), "--out", str(tmp_path / "o")])


def test_ir_example_runs_from_a_fresh_clone(tmp_path, monkeypatch):
    """docs/real-data.md: examples/make_ir_series.py + pinqi fit recover the true T1."""
    import runpy
    from pathlib import Path

    script = Path(__file__).parents[1] / "examples" / "make_ir_series.py"
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    tau = "0.05,0.1,0.2,0.35,0.5,0.7,1,1.7,3"
    main(
        [
            "fit",
            "--images",
            "ir_series.nii.gz",
            "--tau",
            tau,
            "--model",
            "inversion-ab",
            "--out",
            "maps",
            "--quiet",
        ]
    )
    fitted = np.asarray(nib.load("maps/t1.nii.gz").dataobj)[..., 0]
    truth = np.asarray(nib.load("true_t1.nii.gz").dataobj)
    brain = truth > 0
    assert np.median(np.abs(fitted[brain] / truth[brain] - 1)) < 0.02
