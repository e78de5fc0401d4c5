import math
import warnings

import h5py
import numpy as np
import pytest
import torch

from pinqi.cli import main
from pinqi.data.brainweb import SPLITS
from pinqi.data.datasets import H5Dataset, SimulatedDataset, sample_generator, write_h5
from pinqi.data.fields import random_polynomial, smooth_noise
from pinqi.data.geometry import SliceTransform, resample_fractions
from pinqi.data.phantom import phantom_labels
from pinqi.data.simulation import SimulationConfig, parameter_maps
from pinqi.data.tissues import N_CLASSES
from pinqi.physics import CartesianAcquisition, SaturationRecovery

from brainweb_files import write_crisp

SMALL = SimulationConfig(size=48)


def test_sample_shapes_dtypes_and_ranges():
    sample = SimulatedDataset(SMALL, "train", 2, seed=0)[1]
    expected = {
        "kspace": ((5, 8, 48, 48), torch.complex64),
        "mask": ((5, 1, 48), torch.bool),
        "coil_maps": ((8, 48, 48), torch.complex64),
        "params": ((3, 48, 48), torch.float32),
        "brain_mask": ((48, 48), torch.bool),
        "tissue": ((48, 48), torch.int8),
        "tau": ((5,), torch.float32),
        "noise_sigma": ((), torch.float32),
    }
    for name, (shape, dtype) in expected.items():
        assert tuple(sample[name].shape) == shape, name
        assert sample[name].dtype == dtype, name
    params, brain = sample["params"], sample["brain_mask"]
    assert torch.isfinite(params).all()
    t1 = 1 / params[2]
    # mixing and the +-10% polynomial keep T1 inside the tissue table's span
    assert t1.min() >= 0.2 * 0.9 and t1.max() <= 4.0 * 1.1
    assert 0.8 * 0.9 <= t1[brain].median() <= 4.0 * 1.1
    m0 = torch.complex(params[0], params[1]).abs()
    assert m0.max() <= 1.3 and m0[brain].min() > 0.2
    assert 0.1 < brain.float().mean() < 0.7
    assert 0.001 <= float(sample["noise_sigma"]) <= 0.04
    # the tissue labels: the brain is made of CSF, GM, WM (and vessels); CSF has the long T1
    tissue = sample["tissue"]
    assert set(tissue[brain].tolist()) <= {1, 2, 3, 8}
    assert (tissue == 0).sum() > 0 and (tissue[~brain] == 0).any()
    assert t1[tissue == 1].median() > t1[tissue == 3].median() + 0.5
    torch.testing.assert_close((sample["coil_maps"].abs() ** 2).sum(0), torch.ones(48, 48))


def test_masks_acceleration_centre_and_per_frame():
    sample = SimulatedDataset(SimulationConfig(size=64), "val", 1, seed=3)[0]
    lines = sample["mask"][:, 0]
    assert torch.all(lines.sum(-1) == 8)
    assert torch.all(lines[:, 32 - 1 : 32 + 1])
    assert len({tuple(row.tolist()) for row in lines}) == 5


def test_noise_level_matches_sigma():
    config = SimulationConfig(size=64, noise_sigma=(0.02, 0.02))
    sample = SimulatedDataset(config, "test", 1, seed=5)[0]
    model = SaturationRecovery(sample["tau"])
    acquisition = CartesianAcquisition(sample["coil_maps"][None], sample["mask"][None])
    clean = acquisition.forward(model(sample["params"][None]))[0]
    noise = (sample["kspace"] - clean)[sample["mask"].unsqueeze(1).expand_as(clean)]
    assert noise.real.std().item() == pytest.approx(0.02, rel=0.05)
    assert noise.imag.std().item() == pytest.approx(0.02, rel=0.05)
    unsampled = ~sample["mask"].unsqueeze(1).expand_as(clean)
    assert torch.all(sample["kspace"][unsampled] == 0)


def test_noise_sigma_drawn_per_sample_in_range():
    sigmas = [float(s["noise_sigma"]) for s in SimulatedDataset(SMALL, "val", 6, seed=1)]
    assert all(0.001 <= s <= 0.04 for s in sigmas) and len(set(sigmas)) == 6


def test_deterministic_across_runs_and_worker_counts():
    def collect(num_workers):
        dataset = SimulatedDataset(SMALL, "train", 4, seed=11)
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=num_workers)
        return [batch for batch in loader]

    serial, parallel = collect(0), collect(2)
    for a, b in zip(serial, parallel, strict=True):
        for name in a:
            assert torch.equal(a[name], b[name]), name
    again = SimulatedDataset(SMALL, "train", 4, seed=11)[3]
    assert torch.equal(again["kspace"], serial[1]["kspace"][1])


def test_epochs_splits_and_seeds_give_different_samples():
    dataset = SimulatedDataset(SMALL, "train", 1, seed=0)
    first = dataset[0]["params"]
    dataset.set_epoch(1)
    assert not torch.equal(first, dataset[0]["params"])
    assert not torch.equal(first, SimulatedDataset(SMALL, "val", 1, seed=0)[0]["params"])
    assert not torch.equal(first, SimulatedDataset(SMALL, "train", 1, seed=1)[0]["params"])
    assert (
        sample_generator(0, "val", 0, 0).initial_seed()
        != sample_generator(0, "test", 0, 0).initial_seed()
    )


def test_brainweb_anatomy_uses_only_the_split_subjects(tmp_path):
    for subject in SPLITS["test"]:
        write_crisp(tmp_path, subject)
    write_crisp(tmp_path, SPLITS["val"][0])
    config = SimulationConfig(size=32, fov_mm=20.0, anatomy="brainweb", brainweb_dir=str(tmp_path))
    subjects = {int(s["subject"]) for s in SimulatedDataset(config, "test", 12, seed=2)}
    assert subjects <= {int(s) for s in SPLITS["test"]} and len(subjects) >= 2
    val = SimulatedDataset(config, "val", 3, seed=2)
    val.preload()
    assert len(val.anatomy._loaded) == 1
    assert {int(s["subject"]) for s in val} == {int(SPLITS["val"][0])}
    with pytest.raises(FileNotFoundError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        SimulatedDataset(config, "train", 1)


def test_resampling_gives_partial_volumes_and_partition_of_unity():
    labels = phantom_labels(torch.Generator().manual_seed(0))
    fractions = torch.nn.functional.one_hot(torch.from_numpy(labels).long(), N_CLASSES)
    fractions = fractions.permute(2, 0, 1).float()
    out = resample_fractions(fractions, (0.5, 0.5), 64, 220.0)
    torch.testing.assert_close(out.sum(0), torch.ones(64, 64), atol=1e-5, rtol=0)
    assert ((out > 0.05) & (out < 0.95)).any()  # boundaries are mixed
    assert out[0, 0, 0] == pytest.approx(1.0)  # background in the corner
    flipped = resample_fractions(fractions, (0.5, 0.5), 64, 220.0, SliceTransform(flip_x=True))
    torch.testing.assert_close(flipped, out.flip(-1), atol=1e-5, rtol=0)
    turned = resample_fractions(
        fractions, (0.5, 0.5), 64, 220.0, SliceTransform(rotation=math.pi / 2)
    )
    torch.testing.assert_close(turned.sum(0), torch.ones(64, 64), atol=1e-5, rtol=0)


def test_random_transform_ranges():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        t = SliceTransform.random(generator, 10.0, (0.9, 1.1), 5.0, True)
        assert abs(t.rotation) < math.radians(10) and 0.9 <= t.scale <= 1.1
        assert max(abs(s) for s in t.shift) <= 5.0


def test_fields_have_the_requested_size_and_scale():
    generator = torch.Generator().manual_seed(0)
    noise = smooth_noise((64, 48), generator)
    assert noise.shape == (64, 48)
    assert abs(float(noise.mean())) < 1e-5 and float(noise.std()) == pytest.approx(1, rel=1e-4)
    assert float((noise[1:] - noise[:-1]).abs().mean()) < 0.3  # smooth
    poly = random_polynomial((32, 32), (0.0, 0.0, 0.0), generator)
    assert torch.all(poly == 0)


def test_parameter_maps_mix_classes():
    fractions = torch.zeros(N_CLASSES, 8, 8)
    fractions[2, :, :4] = 1  # grey matter
    fractions[3, :, 4:] = 1  # white matter
    params = parameter_maps(fractions, torch.Generator().manual_seed(0))
    t1 = 1 / params[2]
    assert 1.2 * 0.9 <= float(t1[:, :4].min()) and float(t1[:, :4].max()) <= 2.0 * 1.1
    assert 0.8 * 0.9 <= float(t1[:, 4:].min()) and float(t1[:, 4:].max()) <= 1.5 * 1.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 47}, "even"),
        ({"acceleration": 100.0}, "acceleration"),
        ({"acceleration": 0.5}, "acceleration"),
        ({"noise_sigma": (-0.01, 0.02)}, "noise_sigma"),
        ({"noise_sigma": (0.04, 0.01)}, "noise_sigma"),
        ({"tau": (0.5, -1.0)}, "tau"),
        ({"anatomy": "brainweb"}, "brainweb_dir"),
        ({"orientation": "oblique"}, "orientation"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimulationConfig(**kwargs)


def test_config_json_roundtrip():
    config = SimulationConfig(size=64, tau=(0.5, 8.0), noise_sigma=(0.0, 0.01))
    assert SimulationConfig.from_json(config.to_json()) == config


def test_h5_roundtrip_and_attributes(tmp_path):
    dataset = SimulatedDataset(SMALL, "val", 3, seed=4)
    path = write_h5(tmp_path / "val.h5", dataset, progress=False)
    stored = H5Dataset(path)
    assert len(stored) == 3 and stored.config == SMALL
    for i in range(3):
        a, b = stored[i], dataset[i]
        for name in a:
            assert torch.equal(a[name], b[name]), name
    with h5py.File(path) as f:
        assert f["kspace"].shape == (3, 5, 8, 48, 48)
        assert f["params"].shape == (3, 3, 48, 48) and f["brain_mask"].shape == (3, 48, 48)
        assert f["tissue"].shape == (3, 48, 48) and f["tissue"].dtype == np.int8
        assert f.attrs["seed"] == 4 and f.attrs["split"] == "val"
        assert SimulationConfig.from_json(f.attrs["config"]) == SMALL
        np.testing.assert_allclose(f["tau"][()], SMALL.tau)


def test_h5_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        H5Dataset(tmp_path / "none.h5")
    with h5py.File(tmp_path / "partial.h5", "w") as f:
        f["kspace"] = np.zeros((1, 2))
    with pytest.raises(ValueError, match=r"lacks the datasets \['mask', "):
        H5Dataset(tmp_path / "partial.h5")


def test_cli_simulate_writes_h5_and_figure(tmp_path, capsys):
    out = tmp_path / "test.h5"
    main(
        [
            "simulate",
            "--out",
            str(out),
            "--split",
            "test",
            "--n-samples",
            "2",
            "--size",
            "32",
            "--seed",
            "7",
            "--quiet",
        ]
    )
    assert "wrote 2 test samples" in capsys.readouterr().out
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    stored = H5Dataset(out)
    reference = SimulatedDataset(SimulationConfig(size=32), "test", 2, seed=7)[1]
    assert torch.equal(stored[1]["kspace"], reference["kspace"])


def test_cli_simulate_rejects_bad_options(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--out", str(tmp_path / "x.h5"), "--split", "training"])
    assert exit_info.value.code == 2 and "invalid choice: 'training'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"^pinqi simulate: size must be an even integer"):
        main(["simulate", "--out", str(tmp_path / "x.h5"), "--size", "33", "--quiet"])


def test_cli_simulate_set_writes_the_readme_phantoms(tmp_path):
    """The README's example: test-object phantoms, T1 = 0.25 s, any phase."""
    out = tmp_path / "phantoms.h5"
    sets = ["uniform_probability=1", "t1_any_range=[0.25,0.25]", "phase_any_probability=1"]
    argv = ["simulate", "--out", str(out), "--split", "test", "--n-samples", "2", "--size", "32"]
    main([*argv, *(a for s in sets for a in ("--set", s)), "--quiet"])
    stored = H5Dataset(out)
    assert stored.config.uniform_probability == 1 and stored.config.t1_any_range == (0.25, 0.25)
    spreads = []
    for i in range(2):
        sample = stored[i]
        inside = sample["brain_mask"]
        r1 = sample["params"][-1][inside]
        assert inside.sum() > 50
        torch.testing.assert_close(r1, torch.full_like(r1, 4.0))  # T1 = 0.25 s
        phase = torch.complex(sample["params"][0], sample["params"][1])[inside].angle()
        spreads.append(float(phase.max() - phase.min()))
    assert max(spreads) > 0.5  # the phase field of a scanner, up to pi
    # control: without --set, the anatomy with its tissue T1s and small phase
    main([*argv[:2], str(tmp_path / "plain.h5"), *argv[3:], "--quiet"])
    plain = H5Dataset(tmp_path / "plain.h5")[0]
    t1 = 1 / plain["params"][-1][plain["brain_mask"]]
    assert float(t1.min()) > 0.5 and float(t1.max()) > 1.5
    phase = torch.complex(plain["params"][0], plain["params"][1])[plain["brain_mask"]].angle()
    assert float(phase.max() - phase.min()) < 0.3


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("t1_any_rang=[0.25,0.25]", r"unknown keys in --set: \['t1_any_rang'\]"),
        ("uniform_probability", r"--set 'uniform_probability' must look like key=value"),
        ("uniform_probability=2", r"uniform_probability must be a probability in \[0, 1\]"),
    ],
)
def test_cli_simulate_set_errors(tmp_path, setting, message):
    out = tmp_path / "x.h5"
    with pytest.raises(SystemExit, match=rf"^pinqi simulate: {message}"):
        main(["simulate", "--out", str(out), "--size", "32", "--set", setting, "--quiet"])
    assert not out.exists()


def test_cli_simulate_orientation_slices_brainweb_along_its_axis(tmp_path):
    subject = SPLITS["test"][0]
    write_crisp(tmp_path, subject)  # a head of 6 slices of 40x32 voxels (z, y, x)
    common = ["simulate", "--split", "test", "--n-samples", "1", "--size", "32", "--quiet"]
    common += ["--brainweb", str(tmp_path), "--subjects", subject, "--set", "fov_mm=20"]
    extents = {}
    for orientation in ("axial", "coronal"):
        out = tmp_path / f"{orientation}.h5"
        main([*common, "--orientation", orientation, "--out", str(out)])
        stored = H5Dataset(out)
        assert stored.config.orientation == orientation
        config = SimulationConfig(
            size=32,
            fov_mm=20.0,
            anatomy="brainweb",
            brainweb_dir=str(tmp_path),
            orientation=orientation,
            subjects={"test": (subject,)},
        )
        expected = SimulatedDataset(config, "test", 1, seed=0)[0]
        torch.testing.assert_close(stored[0]["params"], expected["params"])
        inside = stored[0]["brain_mask"]
        extents[orientation] = min(int(inside.any(0).sum()), int(inside.any(1).sum()))
    # axial: a disc of brain; coronal: across the 6 slices only, a band 3 mm (~5 px) thick
    assert extents["axial"] >= 10 and extents["coronal"] <= 5
