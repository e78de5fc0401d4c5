"""Scan-specific adaptation without ground truth (issue 19, part 2)."""

import warnings

import h5py
import pytest
import torch

from pinqi.api import reconstruct_maps
from pinqi.cli import main
from pinqi.data.datasets import SimulatedDataset
from pinqi.data.simulation import SimulationConfig
from pinqi.evaluation.adaptation import (
    AdaptConfig,
    adapt_to_slice,
    reconstruct_adapted,
    relative_residual,
)
from pinqi.evaluation.consistency import (
    OutOfDistributionWarning,
    check_consistency,
    t1_disagreement,
)
from pinqi.metrics import parameter_metrics
from pinqi.training.checkpoints import default_model_path, load_model

INPUTS = ("kspace", "coil_maps", "mask")


def phantom_slice(t1: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """One 96 x 96 test-object slice of uniform T1 (out of the default model's distribution)."""
    config = SimulationConfig(
        size=96, uniform_probability=1.0, t1_any_range=(t1, t1), noise_sigma=(0.02, 0.02)
    )
    sample = SimulatedDataset(config, "test", 1, seed=seed)[0]
    return {k: v[None] for k, v in sample.items()}


def model_flagging_everything(tmp_path):
    """The default model with a card whose limits flag every slice.

    Its T1 disagreement target of 0 is never met, so adaptation takes every step it may.
    """
    state = torch.load(default_model_path(), weights_only=False)
    check = {
        "limits": [1e-3],
        "noise_edges": [],
        "t1_disagreement_limits": [0.0],
        "t1_disagreement_median": 0.0,
    }
    state["card"] = {**state["card"], "residual_check": check}
    torch.save(state, tmp_path / "model.pt")
    return tmp_path / "model.pt"


def baseline_residual(model, data):
    with torch.no_grad():
        params = model(*(data[k] for k in INPUTS)).parameters[-1]
        check = check_consistency(model.signal_model, params, *(data[k] for k in INPUTS))
    return check.kspace_residual


def test_adaptation_stops_at_the_target_and_leaves_the_model_alone():
    model, _ = load_model("default")
    data = phantom_slice(0.25)
    residual = baseline_residual(model, data)
    fit = float(residual["CG-SENSE + fit"][0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # a target the unadapted maps already meet: no step, the same maps
    easy = AdaptConfig(target_ratio=10.0)
    adapted, report = adapt_to_slice(model, *(data[k] for k in INPUTS), fit, easy)
    assert report.steps == 0 and report.ratio_after == pytest.approx(report.ratio_before)
    with torch.no_grad():
        torch.testing.assert_close(
            adapted(*(data[k] for k in INPUTS)).parameters[-1],
            model(*(data[k] for k in INPUTS)).parameters[-1],
        )
    # a few steps lower the data residual (a target out of reach: every step is taken); the
    # given model is unchanged
    hard = AdaptConfig(max_steps=6, warmup_steps=2, target_ratio=0.5)
    adapted, report = adapt_to_slice(model, *(data[k] for k in INPUTS), fit, hard)
    assert report.steps == 6 and report.ratio_after < report.ratio_before
    with torch.no_grad():
        loss, _ = relative_residual(adapted, *(data[k] for k in INPUTS))
    assert float(loss.sqrt()) / fit == pytest.approx(report.ratio_after, rel=1e-4)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name])
    assert not any(p.requires_grad for p in adapted.parameters())


def test_adaptation_goes_on_until_t1_agrees_with_the_fit():
    model, _ = load_model("default")
    data = phantom_slice(0.25)
    inputs = [data[k] for k in INPUTS]
    with torch.no_grad():
        params = model(*inputs).parameters[-1]
        check = check_consistency(model.signal_model, params, *inputs)
    fit = float(check.kspace_residual["CG-SENSE + fit"][0])
    easy = AdaptConfig(target_ratio=10.0, max_steps=3, warmup_steps=2)  # the ratio is met
    _, report = adapt_to_slice(model, *inputs, fit, easy, check.baseline, 1e3)
    assert report.steps == 0  # and so is a loose disagreement target
    assert report.disagreement_before == pytest.approx(float(check.t1_disagreement[0]), rel=1e-4)
    _, report = adapt_to_slice(model, *inputs, fit, easy, check.baseline, 0.0)
    assert report.steps == 3  # T1 never agrees exactly: the whole budget
    assert report.ratio_after < report.ratio_before and report.disagreement_after is not None


def test_reconstruct_adapted_gives_the_adapted_networks_maps_and_statistics():
    model, _ = load_model("default")
    data = phantom_slice(0.25)
    inputs = [data[k] for k in INPUTS]
    with torch.no_grad():
        check = check_consistency(model.signal_model, model(*inputs).parameters[-1], *inputs)
    fit = float(check.kspace_residual["CG-SENSE + fit"][0])
    config = AdaptConfig(max_steps=3, warmup_steps=2)
    result = reconstruct_adapted(model, *inputs, fit, check.baseline, config)
    adapted, report = adapt_to_slice(model, *inputs, fit, config, check.baseline)
    assert result.adaptation.steps == report.steps == 3
    with torch.no_grad():
        params = adapted(*inputs).parameters[-1]
    torch.testing.assert_close(result.params, params)
    assert float(result.kspace_residual[0]) / fit == pytest.approx(report.ratio_after, rel=1e-4)
    apart = t1_disagreement(model.signal_model, params, check.baseline)
    torch.testing.assert_close(result.t1_disagreement, apart)
    assert result.residual_map.shape == (1, 96, 96)
    assert float(result.kspace_residual[0]) < float(check.kspace_residual["PINQI"][0])


def test_bad_settings_and_batches_are_refused():
    with pytest.raises(ValueError, match="learning_rate > 0"):
        AdaptConfig(learning_rate=0.0)
    model, _ = load_model("default")
    data = phantom_slice(1.0)
    two = [torch.cat([data[k]] * 2) for k in INPUTS]
    with pytest.raises(ValueError, match="one slice"):
        adapt_to_slice(model, *two, 0.1)


def test_reconstruct_adapts_the_flagged_slices(tmp_path):
    model = model_flagging_everything(tmp_path)
    main(["simulate", "--out", str(tmp_path / "d.h5"), "--n-samples", "1", "--size", "96",
          "--seed", "3", "--quiet"])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfDistributionWarning)
        main(["reconstruct", "--checkpoint", str(model), "--data", str(tmp_path / "d.h5"),
              "--out", str(tmp_path / "r"), "--adapt", "--adapt-steps", "2"])  # fmt: skip
    with h5py.File(tmp_path / "r" / "params.h5") as f:
        assert bool(f["adapted"][0]) and f["adapt_steps"][0] == 2
        assert bool(f["out_of_distribution"][0])
        assert f["residual_ratio"][0] != pytest.approx(f["residual_ratio_unadapted"][0])
    assert "2 steps" in (tmp_path / "r" / "summary.md").read_text()
    with pytest.raises(SystemExit, match="--adapt needs the data check"):
        main(["reconstruct", "--checkpoint", str(model), "--data", str(tmp_path / "d.h5"),
              "--out", str(tmp_path / "r2"), "--adapt", "--no-check"])  # fmt: skip


def test_python_call_adapts_only_flagged_slices(tmp_path):
    data = phantom_slice(0.25)
    inputs = [data[k] for k in INPUTS]
    with pytest.warns(OutOfDistributionWarning):
        plain = reconstruct_maps(
            *inputs, data["tau"][0], checkpoint=model_flagging_everything(tmp_path)
        )
    with pytest.warns(OutOfDistributionWarning):
        adapted = reconstruct_maps(
            *inputs,
            data["tau"][0],
            checkpoint=tmp_path / "model.pt",
            adapt=AdaptConfig(max_steps=3, warmup_steps=1),
        )
    assert adapted["adapt_steps"].tolist() == [3]
    assert not torch.equal(adapted["t1"], plain["t1"])
    assert adapted["residual_ratio"][0] != plain["residual_ratio"][0]
    with pytest.raises(ValueError, match="adapt needs check=True"):
        reconstruct_maps(*inputs, data["tau"][0], check=False, adapt=AdaptConfig())


@pytest.mark.slow
def test_adaptation_beats_the_plain_fit_on_a_uniform_phantom():
    """T1 0.25 s is far outside the training data: adapted, PINQI is no worse than the fit."""
    model, _ = load_model("default")
    data = phantom_slice(0.25, seed=1)
    inputs = [data[k] for k in INPUTS]
    with torch.no_grad():
        params = model(*inputs).parameters[-1]
        check = check_consistency(model.signal_model, params, *inputs)
    fit = float(check.kspace_residual["CG-SENSE + fit"][0])
    adapted, report = adapt_to_slice(model, *inputs, fit)
    with torch.no_grad():
        after = adapted(*inputs).parameters[-1]
    error = {
        name: float(parameter_metrics(p, data["params"], data["brain_mask"])["t1_nrmse"][0])
        for name, p in (("PINQI", params), ("fit", check.baseline), ("adapted", after))
    }
    assert error["adapted"] <= error["fit"] < error["PINQI"]
    assert report.ratio_after <= 0.95 or report.steps == 80
