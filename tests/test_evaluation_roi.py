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
    rows = roi_statistics(noisy, labels, reference=t1 * 1.05)
    assert [r["roi"] for r in rows] == [1, 2, 3]
    assert [r["pixels"] for r in rows] == [int((labels == k).sum()) for k in (1, 2, 3)]
    for row, value in zip(rows, (0.3, 0.8, 1.5), strict=True):
        assert row["mean"] == pytest.approx(value, abs=0.01)
        assert row["std"] == pytest.approx(0.01, rel=0.3)
        assert row["difference_percent"] == pytest.approx(100 * (1 / 1.05 - 1), abs=1.0)
    expected = np.sqrt(np.mean([(0.05 * v) ** 2 for v in (0.3, 0.8, 1.5)]))
    assert rms_deviation(rows) == pytest.approx(expected, abs=0.005)


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
    for name, data in (("labels", labels.astype(np.float32)), ("t1", t1), ("ref", t1 * 1.02)):
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
    assert "RMS deviation" in out and "ROI   3" in out
    rows = list(csv.DictReader(open(tmp_path / "roi.csv")))
    assert len(rows) == 3 and float(rows[0]["difference_percent"]) == pytest.approx(-1.96, abs=0.05)
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
