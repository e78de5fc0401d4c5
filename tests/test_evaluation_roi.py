import csv

import nibabel as nib
import numpy as np
import pytest

from pinqi.cli import main
from pinqi.evaluation.roi import rms_deviation, roi_statistics


def tubes(shape=(40, 40)):
    """A label image with three round ROIs and a T1 map with known values per ROI."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, dtype=np.int16)
    t1 = np.full(shape, 0.0)
    for label, (cy, cx, value) in enumerate([(10, 10, 0.3), (10, 30, 0.8), (30, 20, 1.5)], 1):
        inside = (y - cy) ** 2 + (x - cx) ** 2 < 25
        labels[inside] = label
        t1[inside] = value
    return labels, t1


def test_roi_statistics_and_rms_deviation():
    labels, t1 = tubes()
    rng = np.random.default_rng(0)
    noisy = t1 + 0.01 * rng.standard_normal(t1.shape)
    rows = roi_statistics(noisy, labels, reference=t1 * 1.25)
    assert [r["roi"] for r in rows] == [1, 2, 3]
    assert [r["pixels"] for r in rows] == [int((labels == k).sum()) for k in (1, 2, 3)]
    for row, value in zip(rows, (0.3, 0.8, 1.5), strict=True):
        assert row["mean"] == pytest.approx(value, abs=0.003)  # 0.01 / sqrt(~80 pixels)
        assert row["reference_mean"] == pytest.approx(1.25 * value, rel=1e-12)
        assert row["std"] == pytest.approx(0.01, rel=0.3)
        # 100 (mean - ref) / ref = -20 %; divided by the map instead: -25 %, the reference
        # and the map swapped: +25 %
        assert row["difference_percent"] == pytest.approx(-20.0, abs=0.5)
        assert row["difference_percent"] != pytest.approx(-25.0, abs=0.5)
    expected = np.sqrt(np.mean([(0.25 * v) ** 2 for v in (0.3, 0.8, 1.5)]))
    assert rms_deviation(rows) == pytest.approx(expected, rel=0.01)
    # the RMS of the differences, not their mean or the RMS of relative differences
    assert rms_deviation(rows) != pytest.approx(0.25 * np.mean([0.3, 0.8, 1.5]), rel=0.01)


def test_roi_errors():
    labels, t1 = tubes()
    with pytest.raises(ValueError, match="one shape"):
        roi_statistics(t1[:10], labels)
    with pytest.raises(ValueError, match="no ROI"):
        roi_statistics(t1, np.zeros_like(labels))
    with pytest.raises(ValueError, match="integers"):
        roi_statistics(t1, labels + 0.5)


def test_cli_roi_on_nifti_files(tmp_path, capsys):
    labels, t1 = tubes()
    for name, data in (("labels", labels.astype(np.float32)), ("t1", t1), ("ref", t1 * 1.25)):
        nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), tmp_path / f"{name}.nii.gz")
    main(
        [
            "roi",
            "--map",
            str(tmp_path / "t1.nii.gz"),
            "--labels",
            str(tmp_path / "labels.nii.gz"),
            "--reference",
            str(tmp_path / "ref.nii.gz"),
            "--out",
            str(tmp_path / "roi.csv"),
        ]
    )
    out = capsys.readouterr().out
    assert "ROI   3: 1.5 +- 0 (" in out and "difference -20.0 %" in out
    expected = np.sqrt(np.mean([(0.25 * v) ** 2 for v in (0.3, 0.8, 1.5)]))
    assert f"RMS deviation from the reference: {expected:.4g}" in out
    rows = list(csv.DictReader(open(tmp_path / "roi.csv")))
    assert [int(r["pixels"]) for r in rows] == [int((labels == k).sum()) for k in (1, 2, 3)]
    for row, value in zip(rows, (0.3, 0.8, 1.5), strict=True):
        assert float(row["mean"]) == pytest.approx(value, rel=1e-6)
        assert float(row["reference_mean"]) == pytest.approx(1.25 * value, rel=1e-6)
        # divided by the reference (-20 %), not by the map (-25 %)
        assert float(row["difference_percent"]) == pytest.approx(-20.0, abs=1e-3)
    with pytest.raises(SystemExit, match=r"^pinqi roi: file not found"):
        main(
            [
                "roi",
                "--map",
                str(tmp_path / "none.nii.gz"),
                "--labels",
                str(tmp_path / "labels.nii.gz"),
            ]
        )


def test_cli_roi_without_a_reference_gives_the_map_statistics(tmp_path, capsys, monkeypatch):
    labels, t1 = tubes()
    t1 = t1 + 0.02 * (labels == 2) * (np.indices(t1.shape)[1] % 2)  # ROI 2: 0.80 and 0.82
    for name, data in (("labels", labels), ("t1", t1)):
        nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), tmp_path / f"{name}.nii.gz")
    monkeypatch.chdir(tmp_path)
    argv = ["roi", "--map", "t1.nii.gz", "--labels", "labels.nii.gz"]
    main(argv)  # default output: roi.csv in the working directory
    out = capsys.readouterr().out
    assert "reference" not in out and "RMS deviation" not in out and "wrote roi.csv" in out
    rows = list(csv.DictReader(open(tmp_path / "roi.csv")))
    assert list(rows[0]) == ["roi", "pixels", "mean", "std"]
    for row, k in zip(rows, (1, 2, 3), strict=True):
        inside = labels == k
        assert float(row["mean"]) == pytest.approx(t1[inside].mean(), rel=1e-6)
        assert float(row["std"]) == pytest.approx(t1[inside].std(), rel=1e-5, abs=1e-7)
    assert float(rows[1]["std"]) > 0.005  # ROI 2 is not constant
    with pytest.raises(SystemExit, match=r"roi\.csv exists; give --out"):
        main(argv)  # never overwritten silently


def test_roi_of_a_reconstruct_slice_against_a_fit_of_a_2d_series(tmp_path, capsys):
    """reconstruct writes (x, y, 1), fit --images of a 3D NIfTI too; (x, y) maps still work."""
    tau = (0.5, 1.0, 1.5, 2.0, 8.0)
    t1 = np.full((16, 16), 1.2)
    t1[4:10, 4:10] = 0.6
    series = (1 - np.exp(-np.asarray(tau) / t1[..., None])).astype(np.float32) * 100
    nib.save(nib.Nifti1Image(series, np.eye(4)), tmp_path / "series.nii.gz")
    main(["fit", "--images", str(tmp_path / "series.nii.gz"), "--tau", "0.5,1,1.5,2,8",
          "--out", str(tmp_path / "fit"), "--quiet"])  # fmt: skip
    fitted = nib.load(tmp_path / "fit" / "t1.nii.gz")
    assert fitted.shape == (16, 16, 1)
    assert fitted.header.get_intent()[2] == "t1 [s]"
    labels = np.zeros((16, 16), np.int16)
    labels[5:9, 5:9] = 1
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "labels.nii.gz")
    slice_map = (t1 * 1.1)[..., None].astype(np.float32)  # like pinqi reconstruct's t1.nii.gz
    nib.save(nib.Nifti1Image(slice_map, np.eye(4)), tmp_path / "t1.nii.gz")
    labels_path, reference = str(tmp_path / "labels.nii.gz"), str(fitted.get_filename())
    main(["roi", "--map", str(tmp_path / "t1.nii.gz"), "--labels", labels_path,
          "--reference", reference, "--out", str(tmp_path / "roi.csv")])  # fmt: skip
    assert "difference +10.0 %" in capsys.readouterr().out
    with pytest.raises(ValueError, match="must have one shape"):
        roi_statistics(np.ones((16, 16, 2)), labels)
