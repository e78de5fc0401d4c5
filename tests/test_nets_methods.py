"""The reference methods (Sec. 3.3) and the unrolled ablation networks (Sec. 3.4)."""

import pytest
import torch

from pinqi.config import ExperimentConfig, OptimConfig
from pinqi.data.datasets import SimulatedDataset
from pinqi.data.simulation import SimulationConfig
from pinqi.nets.method_config import METHOD_NAMES, MethodConfig
from pinqi.nets.methods import build_network, count_parameters
from pinqi.nets.pinqi import PINQIConfig
from pinqi.physics import CartesianAcquisition
from pinqi.training.objectives import magnitude_target, pretraining_loss, training_loss

TAU = (0.5, 1.0, 1.5, 2.0, 8.0)
SMALL_MODEL = PINQIConfig(
    iterations=2,
    image_features=(8, 16),
    parameter_features=(8, 16),
    image_norm_groups=4,
    parameter_norm_groups=4,
    cg_iterations=3,
    fit_iterations=3,
)
SMALL_METHOD = {"features": (8, 16), "norm_groups": 4, "iterations": 2, "hidden": 8, "layers": 3}
OPTIM = OptimConfig()


@pytest.fixture(scope="module")
def batch():
    dataset = SimulatedDataset(SimulationConfig(size=16, n_coils=4, acceleration=2.0), "val", 2)
    return {k: torch.stack([dataset[i][k] for i in range(2)]) for k in dataset[0]}


def network(name: str, **changes):
    method = MethodConfig(name=name, **{**SMALL_METHOD, **changes})
    return build_network(method, SMALL_MODEL, "saturation", TAU)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_every_method_trains_on_a_tiny_batch(name, batch):
    net = network(name)
    net.train()
    out = net(batch["kspace"], batch["coil_maps"], batch["mask"])
    p = out.parameters[-1]
    assert p.shape == batch["params"].shape and bool(torch.isfinite(p).all())
    for loss in (training_loss(net, batch, out, OPTIM), pretraining_loss(net, batch, OPTIM)):
        assert loss.ndim == 0 and bool(torch.isfinite(loss))
        net.zero_grad()
        loss.backward()
        grads = [q.grad for q in net.parameters() if q.grad is not None]
        assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
        out = net(batch["kspace"], batch["coil_maps"], batch["mask"])
    assert count_parameters(net) > 0


def test_magnitude_methods_see_no_phase(batch):
    for name in ("mantis", "deept1"):
        net = network(name).eval()
        with torch.no_grad():
            p = net(batch["kspace"], batch["coil_maps"], batch["mask"]).parameters[-1]
        assert float(p[:, 1].abs().max()) == 0 and float(p[:, 0].min()) > 0
    target = magnitude_target(batch["params"])
    m0 = torch.complex(batch["params"][:, 0], batch["params"][:, 1]).abs()
    torch.testing.assert_close(target[:, 0], m0)
    assert float(target[:, 1].abs().max()) == 0


def test_deept1_trains_its_parts_apart(batch):
    net = network("deept1")
    out = net(batch["kspace"], batch["coil_maps"], batch["mask"])
    training_loss(net, batch, out, OPTIM).backward()  # the parameter UNet only
    assert all(q.grad is None for q in net.regulariser.parameters())
    assert net.parameter_net.head.weight.grad is not None
    net.zero_grad()
    pretraining_loss(net, batch, OPTIM).backward()  # the reconstruction only
    assert all(q.grad is None for q in net.parameter_net.parameters())
    assert net.raw_lambda.grad is not None


def test_dopamine_data_gradient_is_the_gradient_of_the_data_term(batch):
    net = network("dopamine").double()
    acquisition = CartesianAcquisition(batch["coil_maps"].to(torch.complex128), batch["mask"])
    kspace = batch["kspace"].to(torch.complex128)
    p = batch["params"].double().clone().requires_grad_(True)
    objective = 0.5 * (acquisition.forward(net.signal_model(p)) - kspace).abs().square().sum()
    (expected,) = torch.autograd.grad(objective, p)
    torch.testing.assert_close(net.data_gradient(p.detach(), acquisition, kspace), expected)


def test_dopamine_updates_are_soft_clipped(batch):
    net = network("dopamine", clip=(0.01, 0.01, 0.05))
    with torch.no_grad():
        out = net(batch["kspace"], batch["coil_maps"], batch["mask"])
    for before, after in zip(out.parameters, out.parameters[1:], strict=False):
        step = (after - before).abs().amax(dim=(0, 2, 3))
        assert bool((step <= torch.tensor([0.01, 0.01, 0.05]) + 1e-6).all())
    with pytest.raises(ValueError, match="3 positive thresholds"):
        network("dopamine", clip=(1.0, 1.0))


def test_unrolled_fit_trains_on_images_unless_end_to_end(batch):
    separate = network("unrolled-fit", end_to_end=False)
    separate.train()
    out = separate(batch["kspace"], batch["coil_maps"], batch["mask"])
    assert not out.fit_infos  # training sees the images only
    separate.eval()
    with torch.no_grad():
        out = separate(batch["kspace"], batch["coil_maps"], batch["mask"])
    assert len(out.fit_infos) == 1  # the fit runs at inference
    joint = network("unrolled-fit", end_to_end=True).train()
    out = joint(batch["kspace"], batch["coil_maps"], batch["mask"])
    training_loss(joint, batch, out, OPTIM).backward()
    assert joint.image_net.head.weight.grad.abs().sum() > 0  # through the fit layer


def test_method_section_in_presets_and_errors():
    config = ExperimentConfig.from_dict({"method": {"name": "dopamine", "iterations": 10}})
    assert config.method.name == "dopamine" and config.method.iterations == 10
    with pytest.raises(ValueError, match=r"method\.name must be one of"):
        MethodConfig(name="voxelmorph")
    with pytest.raises(ValueError, match=r"needs a signal model with parameters \(Re M0"):
        build_network(MethodConfig(name="mantis"), SMALL_MODEL, "inversion-ab", TAU[:4])
