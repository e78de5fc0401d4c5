import csv
import itertools

import pytest
import torch
import yaml

from pinqi.cli import main
from pinqi.config import ExperimentConfig
from pinqi.data.datasets import SimulatedDataset
from pinqi.training.checkpoints import export_model, load_model
from pinqi.training.clock import training_clock
from pinqi.training.losses import parameter_loss
from pinqi.training.module import PINQITask
from pinqi.training.run import train
from pinqi.training.schedule import warmup_cosine

TINY = {
    "name": "tiny",
    "data": {"size": 16, "n_coils": 4, "acceleration": 2.0},
    "model": {
        "iterations": 2,
        "image_features": [8, 16],
        "parameter_features": [8, 16],
        "cg_iterations": 3,
        "fit_iterations": 3,
    },
    "optim": {
        "batch_size": 2,
        "max_epochs": 2,
        "samples_per_epoch": 4,
        "val_samples": 2,
        "warmup_steps": 1,
        "checkpoint_every_n_steps": 1,
        "num_workers": 0,
        "accelerator": "cpu",
        "devices": 1,
        "pretrain_epochs": 1,
    },
}


def batch_of(config: ExperimentConfig, n: int = 2) -> dict[str, torch.Tensor]:
    dataset = SimulatedDataset(config.data, "val", n, seed=1)
    return {k: torch.stack([dataset[i][k] for i in range(n)]) for k in dataset[0]}


def test_presets_load_and_match_the_paper():
    paper = ExperimentConfig.from_yaml("configs/paper.yaml")
    assert paper.model.iterations == 5 and paper.optim.batch_size == 16
    assert paper.optim.lr_networks == 4e-3 and paper.optim.lr_lambdas == 1e-3
    assert paper.model.image_features == (16, 32, 48, 64)
    assert paper.model.parameter_features == (32, 64, 96, 128)
    assert paper.data.tau == (0.5, 1.0, 1.5, 2.0, 8.0) and paper.data.acceleration == 8
    assert paper.data.fov_mm / paper.data.size == 1.0  # 1 mm pixels as acquired
    assert paper.model.fit_solver == "newton"  # the same minimiser, faster (issue 18)
    assert (paper.model.image_norm_groups, paper.model.parameter_norm_groups) == (8, 16)
    cpu = ExperimentConfig.from_yaml("configs/cpu.yaml")
    assert cpu.data.size == 96 and cpu.model.iterations >= 3
    ir = ExperimentConfig.from_yaml("configs/cpu-inversion-ab.yaml")
    assert ir.data.signal_model == "inversion-ab" and len(ir.data.tau) == 7


def test_config_errors():
    with pytest.raises(ValueError, match="unknown keys in optim"):
        ExperimentConfig.from_dict({"optim": {"learning_rate": 1.0}})
    with pytest.raises(FileNotFoundError):
        ExperimentConfig.from_yaml("missing.yaml")


def test_schedule_warms_up_then_decays():
    factors = [warmup_cosine(s, 10, 100, 0.1) for s in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[10] == pytest.approx(1.0)
    assert factors[100] == pytest.approx(0.1)
    assert all(a <= b for a, b in itertools.pairwise(factors[:11]))
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))


def test_loss_downweights_outside_the_mask():
    target = torch.zeros(1, 3, 2, 2)
    prediction = torch.ones(1, 3, 2, 2)
    mask = torch.tensor([[[True, False], [False, False]]])
    assert float(parameter_loss(prediction, target, mask, 0.0)) == pytest.approx(0.25)
    # inside: weight 1 (as documented), outside: 0.01; 3 of 12 entries inside
    assert float(parameter_loss(prediction, target, mask, 0.01)) == pytest.approx(
        (3 * 1 + 9 * 0.01) / 12
    )


def test_t1_weighted_loss_is_the_t1_error_to_first_order():
    torch.manual_seed(0)
    target = torch.stack(
        [torch.rand(2, 6, 6), torch.rand(2, 6, 6), 0.2 + 2 * torch.rand(2, 6, 6)], 1
    ).double()
    d_r1 = 1e-4 * torch.randn(2, 6, 6, dtype=torch.float64)
    prediction = target.clone()
    prediction[:, -1] += d_r1
    mask = torch.ones(2, 6, 6, dtype=torch.bool)
    t1_error = 1 / prediction[:, -1] - 1 / target[:, -1]
    expected = (t1_error**2).sum() / target.numel()
    weighted = parameter_loss(prediction, target, mask, 0.0, t1_weight_power=4)
    torch.testing.assert_close(weighted, expected, rtol=1e-3, atol=0)
    plain = parameter_loss(prediction, target, mask, 0.0)
    torch.testing.assert_close(plain, (d_r1**2).sum() / target.numel())
    # the M0 channels are not reweighted
    m0_only = target.clone()
    m0_only[:, 0] += 0.1
    assert float(parameter_loss(m0_only, target, mask, 0.0, 4.0)) == pytest.approx(
        float(parameter_loss(m0_only, target, mask, 0.0))
    )


def test_t1_weight_max_clamps_the_weight_of_long_t1():
    target = torch.zeros(1, 3, 1, 2, dtype=torch.float64)
    target[0, 2, 0] = torch.tensor([1 / 0.5, 1 / 4.0])  # T1 0.5 s and 4 s
    prediction = target.clone()
    prediction[0, 2] += 0.1
    mask = torch.ones(1, 1, 2, dtype=torch.bool)
    loss = parameter_loss(prediction, target, mask, 0.0, t1_weight_power=2, t1_weight_max=2.0)
    # R1 errors 0.1 weighted by 0.5^2 and min(4, 2)^2, over 6 entries
    assert float(loss) == pytest.approx(0.01 * (0.25 + 4.0) / 6)
    unclamped = parameter_loss(prediction, target, mask, 0.0, t1_weight_power=2)
    assert float(unclamped) == pytest.approx(0.01 * (0.25 + 16.0) / 6)


def test_a_few_steps_lower_the_loss():
    config = ExperimentConfig.from_dict(TINY)
    task = PINQITask(config.to_dict())
    batch = batch_of(config)
    optimizer = torch.optim.Adam(task.model.parameters(), lr=3e-3)
    task.trainer = None

    def loss() -> torch.Tensor:
        from pinqi.training.losses import pinqi_loss

        out = task.model(batch["kspace"], batch["coil_maps"], batch["mask"])
        return pinqi_loss(out, batch["params"], batch["brain_mask"], 0.05, 0.01)

    first = float(loss())
    for _ in range(15):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    assert float(loss()) < 0.7 * first


def test_train_checkpoint_resume_and_export(tmp_path):
    config = ExperimentConfig.from_dict(TINY)
    last = train(config, tmp_path / "run")
    assert last.name == "last.ckpt"
    rows = list(csv.DictReader(open(tmp_path / "run" / "logs" / "metrics.csv")))
    assert any(r.get("val_t1_nrmse") for r in rows) and any(r.get("train_loss") for r in rows)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["name"] == "tiny"

    model, loaded = load_model(last)
    assert loaded == config
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 4
    task = PINQITask.load_from_checkpoint(last)
    batch = batch_of(config)
    inputs = (batch["kspace"], batch["coil_maps"], batch["mask"])
    with torch.no_grad():
        a = model(*inputs).parameters[-1]
        b = task.model.eval()(*inputs).parameters[-1]
    torch.testing.assert_close(a, b, rtol=0, atol=0)

    exported = export_model(last, tmp_path / "model.pt", {"note": "test"})
    again, _ = load_model(exported)
    with torch.no_grad():
        torch.testing.assert_close(again(*inputs).parameters[-1], a, rtol=0, atol=0)

    longer = ExperimentConfig.from_dict({**TINY, "optim": {**TINY["optim"], "max_epochs": 3}})
    train(longer, tmp_path / "run", resume="auto")
    assert (
        torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)[
            "global_step"
        ]
        == 6
    )


def test_init_starts_a_new_run_from_a_checkpoint(tmp_path):
    config = ExperimentConfig.from_dict(TINY)
    first = train(config, tmp_path / "first")
    source, _ = load_model(first)
    one_step = ExperimentConfig.from_dict(
        {**TINY, "optim": {**TINY["optim"], "max_steps": 1, "pretrain_epochs": 0}}
    )
    tuned = train(one_step, tmp_path / "tuned", init=first)
    assert torch.load(tuned, weights_only=False)["global_step"] == 1
    fresh = train(one_step, tmp_path / "fresh")

    def distance(path) -> float:
        model, _ = load_model(path)
        pairs = zip(model.parameters(), source.parameters(), strict=True)
        return sum(float((a - b).detach().abs().sum()) for a, b in pairs)

    # one small step away from the source, while a fresh run is far from it
    assert distance(tuned) < 0.1 * distance(fresh)

    other = ExperimentConfig.from_dict(
        {**TINY, "model": {**TINY["model"], "parameter_features": [4, 8]}}
    )
    with pytest.raises(ValueError, match="does not match the preset's model section"):
        train(other, tmp_path / "other", init=first)


def test_cli_train_and_info(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    main(["info", "--config", str(path)])
    assert "parameter_net" in capsys.readouterr().out
    main(["train", "--config", str(path), "--out", str(tmp_path / "run"), "--max-steps", "1"])
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_signal_model_and_delays_selectable_in_the_preset(tmp_path):
    """Simulation, network and fit follow data.signal_model and data.tau of the YAML."""
    values = {
        **TINY,
        "data": {
            **TINY["data"],
            "signal_model": "inversion-ab",
            "tau": [0.1, 0.3, 0.6, 1.0, 2.0, 4.0],
        },
        "optim": {**TINY["optim"], "max_epochs": 1, "pretrain_epochs": 0},
    }
    path = tmp_path / "ir.yaml"
    path.write_text(yaml.safe_dump(values))
    config = ExperimentConfig.from_yaml(path)
    batch = batch_of(config)
    assert batch["params"].shape == (2, 5, 16, 16) and batch["kspace"].shape[1] == 6
    last = train(config, tmp_path / "run")
    model, _ = load_model(last)
    assert model.signal_model.n_params == 5 and model.parameter_net.head.out_channels == 5
    with torch.no_grad():
        out = model(batch["kspace"], batch["coil_maps"], batch["mask"]).parameters[-1]
    assert out.shape == (2, 5, 16, 16) and torch.isfinite(out).all()


def test_preset_overrides_from_the_command_line(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    main(
        [
            "train",
            "--config",
            str(path),
            "--out",
            str(out),
            "--max-steps",
            "1",
            "--set",
            "data.tau=[0.05, 0.4, 1.1, 2.5]",
            "--set",
            "data.signal_model=inversion-ab",
        ]
    )
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["data"]["tau"] == [0.05, 0.4, 1.1, 2.5]
    assert recorded["data"]["signal_model"] == "inversion-ab"
    assert recorded["optim"]["max_steps"] == 1
    model, _ = load_model(out / "checkpoints" / "last.ckpt")
    assert model.signal_model.n_params == 5 and model.signal_model.n_tau == 4


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.tau", "must look like section.key=value"),
        ("data.tua=[1, 2]", "unknown key"),
        ("dta.tau=[1, 2]", "not a config section"),
        ("data.tau.x=1", "not a config section"),
    ],
)
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        ExperimentConfig.from_dict(TINY).with_overrides([override])


def test_a_finished_run_moved_elsewhere_resumes_to_its_last_checkpoint(tmp_path):
    # a run trained on another machine (a GPU) and copied here: resuming it trains nothing
    # and still names its last checkpoint, so it can be evaluated where it landed
    config = ExperimentConfig.from_dict(TINY)
    train(config, tmp_path / "there" / "run")
    (tmp_path / "there").rename(tmp_path / "here")
    last = train(config, tmp_path / "here" / "run", resume="auto")
    assert last == tmp_path / "here" / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 4


def test_resuming_mid_epoch_continues_with_the_unseen_samples(tmp_path):
    # an interrupted run (simulated: its step-2 checkpoint, mid-epoch, becomes last.ckpt of a
    # new folder) resumed to the end equals the uninterrupted run, weight for weight
    config = ExperimentConfig.from_dict(
        {**TINY, "optim": {**TINY["optim"], "samples_per_epoch": 8, "pretrain_epochs": 0}}
    )
    whole = train(config, tmp_path / "whole")
    (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
    middle = tmp_path / "whole" / "checkpoints" / "epoch=0-step=2.ckpt"
    state = torch.load(middle, weights_only=False)
    assert training_clock(middle)["devices"] == [f"CPU ({torch.get_num_threads()} threads)"]
    state["callbacks"]["TrainingClock"]["seconds"] = 1000.0  # as if the first part took long
    torch.save(state, tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    resumed = train(config, tmp_path / "resumed", resume="auto")
    a, b = (torch.load(p, weights_only=False) for p in (whole, resumed))
    assert a["global_step"] == b["global_step"] == 8
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=key)
    # the training time goes on from the checkpoint's
    assert 1000.0 < training_clock(resumed)["seconds"] < 1000.0 + training_clock(whole)["seconds"]
