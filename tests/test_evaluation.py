import csv
import re

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from pinqi.cli import main
from pinqi.config import ExperimentConfig
from pinqi.data.datasets import H5Dataset, SimulatedDataset, write_h5
from pinqi.data.simulation import SimulationConfig
from pinqi.evaluation.baseline import cg_sense_fit
from pinqi.evaluation.evaluate import reconstruct_all
from pinqi.metrics import MIN_R1, parameter_metrics, t1_from_r1
from pinqi.physics import SaturationRecovery
from pinqi.training.checkpoints import load_model
from pinqi.training.run import train

from conftest import assert_accurate, nrmse
from test_training import TINY


def test_metrics_zero_for_perfect_and_known_for_scaled_t1():
    truth = torch.stack(
        [torch.full((1, 4, 4), 0.8), torch.zeros(1, 4, 4), torch.full((1, 4, 4), 1.0)], 1
    )
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    perfect = parameter_metrics(truth, truth, mask)
    assert all(float(v) == 0 for v in perfect.values())
    longer = truth.clone()
    longer[:, 2] = 1 / 1.1  # T1 10% longer
    metrics = parameter_metrics(longer, truth, mask)
    assert float(metrics["t1_nrmse"]) == pytest.approx(0.1, rel=1e-5)
    assert float(metrics["t1_mae"]) == pytest.approx(0.1, rel=1e-5)
    outside = mask.clone()
    outside[0, 0, 0] = False
    longer[0, 2, 0, 0] = 0.01  # a wild pixel outside the mask is ignored
    assert float(parameter_metrics(longer, truth, outside)["t1_mae"]) == pytest.approx(
        0.1, rel=1e-5
    )
    assert float(t1_from_r1(torch.tensor(-1.0))) == 10.0


def test_t1_clamped_is_the_share_of_mask_pixels_below_min_r1():
    truth = torch.stack([torch.ones(2, 4, 4), torch.zeros(2, 4, 4), torch.ones(2, 4, 4)], 1)
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    mask[:, 0] = False  # 12 pixels per sample inside the mask
    prediction = truth.clone()
    prediction[0, 2, 1, :3] = torch.tensor([0.05, -1.0, MIN_R1 / 2])  # 3 inside
    prediction[0, 2, 2, 0] = MIN_R1  # not below the limit
    prediction[0, 2, 0, :] = 0.0  # outside the mask
    prediction[1, 2, 3, 3] = 0.0  # 1 inside
    metrics = parameter_metrics(prediction, truth, mask)
    torch.testing.assert_close(metrics["t1_clamped"], torch.tensor([3 / 12, 1 / 12]))
    assert list(metrics) == [
        "t1_nrmse",
        "t1_mae",
        "t1_clamped",
        "m0_nrmse",
        "m0_mae",
        "t1_nrmse_short",
        "t1_median_rel",
    ]


def test_tissue_metrics_against_a_hand_calculation():
    # one sample, 2 x 4 pixels: CSF (T1 3 s), GM (1.5 s), WM (1 s) and a background pixel
    tissue = torch.tensor([[[1, 1, 2, 2], [3, 3, 0, 1]]])
    t1_true = torch.tensor([[[3.0, 3.0, 1.5, 1.5], [1.0, 1.0, 0.5, 3.0]]])
    t1 = torch.tensor([[[2.0, 2.5, 1.5, 1.8], [1.1, 0.9, 0.1, 3.0]]])
    mask = tissue > 0
    mask[0, 1, 3] = False  # a CSF pixel outside the brain mask is not counted

    def params(t):
        return torch.stack([torch.ones_like(t), torch.zeros_like(t), 1 / t], 1).double()

    got = parameter_metrics(params(t1), params(t1_true), mask, tissue)
    error = (t1 - t1_true)[0]
    csf, gm, wm = error[0, :2], error[0, 2:], error[1, :2]
    assert float(got["t1_bias_csf"]) == pytest.approx(float(csf.mean()))  # -0.75 s
    assert float(got["t1_nrmse_csf"]) == pytest.approx(float(csf.norm() / (3 * 2**0.5)))
    assert float(got["t1_bias_gm"]) == pytest.approx(0.15)
    assert float(got["t1_nrmse_wm"]) == pytest.approx(float(wm.norm() / 2**0.5))
    # T1 < 2 s: GM and WM pixels only
    short = torch.cat([gm, wm])
    assert float(got["t1_nrmse_short"]) == pytest.approx(
        float(short.norm() / torch.tensor([1.5, 1.5, 1.0, 1.0]).norm())
    )
    relative = torch.tensor([1 / 3, 0.5 / 3, 0.0, 0.2, 0.1, 0.1])
    assert float(got["t1_median_rel"]) == pytest.approx(float(relative.median()))
    # the map and the reference swapped give other values (the metrics are not symmetric)
    swapped = parameter_metrics(params(t1_true), params(t1), mask, tissue)
    assert float(swapped["t1_nrmse_csf"]) != pytest.approx(float(got["t1_nrmse_csf"]), rel=0.05)
    assert float(swapped["t1_bias_csf"]) == pytest.approx(-float(got["t1_bias_csf"]))


def test_tissue_metrics_are_nan_where_a_sample_lacks_the_tissue():
    tissue = torch.tensor([[[2, 3]], [[1, 1]]])
    truth = torch.stack([torch.ones(2, 1, 2), torch.zeros(2, 1, 2), torch.ones(2, 1, 2)], 1)
    got = parameter_metrics(truth, truth, tissue > 0, tissue)
    assert torch.isnan(got["t1_nrmse_csf"][0]) and float(got["t1_nrmse_csf"][1]) == 0
    assert torch.isnan(got["t1_bias_gm"][1]) and float(got["t1_bias_gm"][0]) == 0


def test_baseline_recovers_t1_from_fully_sampled_data():
    config = SimulationConfig(size=32, acceleration=1.0, noise_sigma=(0.001, 0.001))
    sample = SimulatedDataset(config, "test", 1, seed=0)[0]
    model = SaturationRecovery(sample["tau"])
    p = cg_sense_fit(model, sample["kspace"][None], sample["coil_maps"][None], sample["mask"][None])
    metrics = parameter_metrics(p, sample["params"][None], sample["brain_mask"][None])
    t1, t1_true = t1_from_r1(p[0, 2]), t1_from_r1(sample["params"][2])
    error = assert_accurate(t1, t1_true, sample["brain_mask"], 0.02)
    assert float(metrics["t1_nrmse"]) == pytest.approx(error, rel=1e-4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    config = ExperimentConfig.from_dict(TINY)
    checkpoint = train(config, root / "run")
    data = write_h5(
        root / "test.h5", SimulatedDataset(config.data, "test", 3, seed=9), progress=False
    )
    return checkpoint, data, root


def single_sample_maps(checkpoint, data) -> dict[str, list[torch.Tensor]]:
    """PINQI's and the baseline's parameter maps of every sample, one sample at a time."""
    model, _ = load_model(checkpoint)
    dataset = H5Dataset(data)
    maps = {"PINQI": [], "CG-SENSE + fit": []}
    with torch.no_grad():
        for i in range(len(dataset)):
            inputs = [dataset[i][name][None] for name in ("kspace", "coil_maps", "mask")]
            maps["PINQI"].append(model(*inputs).parameters[-1][0])
            maps["CG-SENSE + fit"].append(cg_sense_fit(model.signal_model, *inputs)[0])
    return maps


def check_rows_against_an_independent_calculation(checkpoint, data, rows, out):
    """Every row's T1 and M0 errors are those of its own sample's maps (recomputed here in
    numpy, one sample at a time), against its own ground truth; summary.md's means are the
    rows' means."""
    dataset = H5Dataset(data)
    for method, maps in single_sample_maps(checkpoint, data).items():
        own = [r for r in rows if r["method"] == method]
        assert [int(r["sample"]) for r in own] == list(range(len(dataset)))
        errors = []
        for row, params in zip(own, maps, strict=True):
            sample = dataset[int(row["sample"])]
            inside = sample["brain_mask"].numpy()
            t1 = 1 / np.maximum(params[-1].numpy(), MIN_R1)
            t1_true = 1 / sample["params"][-1].numpy()
            m0 = params[0].numpy() + 1j * params[1].numpy()
            m0_true = sample["params"][0].numpy() + 1j * sample["params"][1].numpy()
            expected = {
                "t1_nrmse": nrmse(t1, t1_true, inside),
                "t1_mae": np.abs(t1 - t1_true)[inside].mean(),
                "m0_nrmse": nrmse(m0, m0_true, inside),
            }
            for name, value in expected.items():
                assert float(row[name]) == pytest.approx(value, rel=2e-3), (method, name)
            # the map and the reference swapped: ||x - x_true|| / ||x|| is another number
            swapped = nrmse(t1_true, t1, inside)
            assert float(row["t1_nrmse"]) != pytest.approx(swapped, rel=2e-3)
            errors.append(expected["t1_nrmse"])
        # another sample's truth gives another number: the rows are in sample order
        assert len(set(np.round(errors, 4))) == len(errors)
        line = next(x for x in (out / "summary.md").read_text().splitlines() if method in x)
        cells = [c.strip() for c in line.strip("|").split("|")]
        header = next(x for x in (out / "summary.md").read_text().splitlines() if "t1_nrmse" in x)
        names = [c.strip() for c in header.strip("|").split("|")]
        mean, _, spread = cells[names.index("t1_nrmse")].partition(" +- ")
        assert float(mean) == pytest.approx(np.mean(errors), abs=1e-4)
        assert float(spread) == pytest.approx(np.std(errors, ddof=1), abs=1e-4)


def test_evaluate_writes_metrics_summary_and_figures(trained, capsys):
    checkpoint, data, root = trained
    main(
        [
            "evaluate",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(data),
            "--out",
            str(root / "ev"),
            "--device",
            "cpu",
            "--batch-size",
            "2",  # 3 samples: two batches
        ]
    )
    rows = list(csv.DictReader(open(root / "ev" / "metrics.csv")))
    check_rows_against_an_independent_calculation(checkpoint, data, rows, root / "ev")
    assert {"sample", "method", "t1_nrmse", "t1_mae", "t1_clamped"} <= set(rows[0])
    assert len(rows) == 6 and {r["method"] for r in rows} == {"PINQI", "CG-SENSE + fit"}
    assert all(np.isfinite(float(r["t1_nrmse"])) for r in rows)
    assert all(0 <= float(r["t1_clamped"]) <= 1 for r in rows)
    for name in ("summary.md", "maps.png", "distributions.png"):
        assert (root / "ev" / name).is_file()
    summary = (root / "ev" / "summary.md").read_text()
    assert "t1_clamped" in summary and "||x - x_true|| / ||x_true||" in summary
    # the finer T1 metrics, each recomputed here from the stored maps' ground truth
    dataset = H5Dataset(data)
    truth = torch.stack([dataset[i]["params"] for i in range(len(dataset))])
    masks = torch.stack([dataset[i]["brain_mask"] for i in range(len(dataset))])
    tissue = torch.stack([dataset[i]["tissue"] for i in range(len(dataset))])
    columns = ["t1_nrmse_short", "t1_median_rel"]
    columns += [f"t1_{kind}_{t}" for t in ("csf", "gm", "wm") for kind in ("nrmse", "bias")]
    assert set(columns) <= set(rows[0]) and all(c in summary for c in columns)
    baseline = [r for r in rows if r["method"] == "CG-SENSE + fit"]
    for row in baseline:
        i = int(row["sample"])
        region = masks[i] & (tissue[i] == 2)
        assert region.any()
        assert float(row["t1_bias_gm"]) != 0
        assert (1 / truth[i, 2][region]).mean() > 1.0  # grey matter's T1 (1.2-2 s)
    out = capsys.readouterr().out
    assert "PINQI" in out and re.search(r"time: data .* s, PINQI .* s/sample\), baseline", out)


def test_reconstruct_all_counts_samples_and_times_each_stage(trained, capsys):
    checkpoint, data, _ = trained
    model, _ = load_model(checkpoint)
    result = reconstruct_all(model, H5Dataset(data), batch_size=2, baseline=True, device="cpu")
    assert "3/3" in capsys.readouterr().err  # the bar counts samples, not batches
    assert set(result.maps) == {"PINQI", "CG-SENSE + fit"}
    assert all(m.shape == (3, 3, 16, 16) and m.device.type == "cpu" for m in result.maps.values())
    assert set(result.seconds) == {"data", "PINQI", "baseline"}
    assert all(s >= 0 for s in result.seconds.values())
    assert re.fullmatch(
        r"time: data \d+\.\d s, PINQI \d+\.\d s \(\d+\.\d\d s/sample\), baseline \d+\.\d s",
        result.timing(),
    )
    alone = reconstruct_all(model, H5Dataset(data), batch_size=2, baseline=False, progress=False)
    assert set(alone.seconds) == {"data", "PINQI"} and "baseline" not in alone.timing()
    assert set(result.kspace_residual) == set(result.maps) and not alone.kspace_residual
    assert all(r.shape == (3,) and bool((r > 0).all()) for r in result.kspace_residual.values())
    assert all(m.shape == (3, 16, 16) for m in result.residual_maps.values())


def test_reconstruct_writes_hdf5_nifti_and_png(trained):
    checkpoint, data, root = trained
    main(
        [
            "reconstruct",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(data),
            "--out",
            str(root / "rec"),
            "--device",
            "cpu",
            "--batch-size",
            "2",  # 3 samples: two batches
        ]
    )
    t1 = nib.load(root / "rec" / "t1.nii.gz")
    assert t1.shape == (16, 16, 3)
    values = np.asarray(t1.dataobj)
    # the maps of each sample in its own slice (x along the columns, y up the rows), as the
    # model gives them one sample at a time
    for i, params in enumerate(single_sample_maps(checkpoint, data)["PINQI"]):
        expected = 1 / np.maximum(params[-1].numpy(), MIN_R1)
        np.testing.assert_allclose(values[..., i], expected[::-1].T, rtol=1e-4)
        assert np.abs(values[..., i] - expected.T).max() > 1e-2  # not the unflipped map
    assert nib.load(root / "rec" / "m0.nii.gz").shape == (16, 16, 3)
    assert (root / "rec" / "params.h5").is_file() and (root / "rec" / "sample000.png").is_file()
    for name in ("residual", "residual_fit"):
        assert nib.load(root / "rec" / f"{name}.nii.gz").shape == (16, 16, 3)
    with h5py.File(root / "rec" / "params.h5") as f:
        assert f["residual"].shape == (3, 16, 16) and f["residual_ratio"].shape == (3,)
        ratio = f["kspace_residual"][()] / f["kspace_residual_fit"][()]
        np.testing.assert_allclose(f["residual_ratio"][()], ratio, rtol=1e-6)


def test_evaluate_rejects_incompatible_data(trained, tmp_path):
    checkpoint, _, _ = trained
    other = SimulationConfig(size=16, n_coils=4, tau=(0.5, 1.0))
    data = write_h5(tmp_path / "two.h5", SimulatedDataset(other, "test", 1), progress=False)
    with pytest.raises(SystemExit, match=r"at 2 delays .* trained for saturation at 5"):
        main(
            [
                "evaluate",
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(data),
                "--out",
                str(tmp_path),
            ]
        )
    with pytest.raises(SystemExit, match=r"^pinqi evaluate: checkpoint not found"):
        main(
            [
                "evaluate",
                "--checkpoint",
                str(tmp_path / "none.ckpt"),
                "--data",
                str(data),
                "--out",
                str(tmp_path),
            ]
        )


def test_other_delays_are_refused_unless_allowed(trained, tmp_path):
    """The model's prior belongs to its protocol: other delays need an explicit go-ahead."""
    checkpoint, _, _ = trained
    config = ExperimentConfig.from_dict(TINY).data
    other = SimulationConfig(**{**config.__dict__, "tau": tuple(2 * t for t in config.tau)})
    data = write_h5(tmp_path / "other.h5", SimulatedDataset(other, "test", 1), progress=False)
    argv = ["reconstruct", "--checkpoint", str(checkpoint), "--data", str(data), "--device", "cpu"]
    with pytest.raises(SystemExit, match=r"trained for saturation at .* --allow-other-protocol"):
        main([*argv, "--out", str(tmp_path / "refused")])
    assert not (tmp_path / "refused").exists()
    with pytest.warns(UserWarning, match="going on as asked"):
        main([*argv, "--out", str(tmp_path / "anyway"), "--allow-other-protocol"])
    assert (tmp_path / "anyway" / "t1.nii.gz").is_file()


def test_evaluate_adds_the_fully_sampled_fit(trained, capsys):
    checkpoint, data, root = trained
    out = root / "ev-full"
    main(
        [
            *["evaluate", "--checkpoint", str(checkpoint), "--data", str(data)],
            *["--out", str(out), "--device", "cpu", "--reference", "full"],
        ]
    )
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    methods = [r["method"] for r in rows]
    assert methods.count("fully sampled fit") == 3 and len(rows) == 9
    error = {m: np.mean([float(r["t1_nrmse"]) for r in rows if r["method"] == m]) for m in methods}
    # nothing missing: the fully sampled fit is the floor the undersampled methods sit above
    assert error["fully sampled fit"] < 0.5 * error["CG-SENSE + fit"]
    assert "fully sampled fit" in (out / "summary.md").read_text()
    assert re.search(r"fully sampled fit \d+\.\d s", capsys.readouterr().out)
