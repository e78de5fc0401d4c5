"""The network's layers run without host synchronisation (issue 18): counted, and equal to the
solvers with early exits and compaction."""

import collections
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pinqi._checks import one_read, require
from pinqi.config import ExperimentConfig
from pinqi.data.datasets import SimulatedDataset
from pinqi.nets import PINQI, PINQIConfig
from pinqi.physics import CartesianAcquisition, SaturationRecovery
from pinqi.solvers.cg import conjugate_gradient
from pinqi.solvers.data_consistency import solve_data_consistency
from pinqi.solvers.signal_fit import solve_signal_fit
from pinqi.training.losses import pinqi_loss

from conftest import TAU

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _step_worker import CountReads
from test_nets import TINY, tiny_problem
from test_solvers_data_consistency import problem
from test_solvers_signal_fit import fit_problem


class HostReads(CountReads):
    """The benchmark's counter of host reads (``benchmarks/_step_worker.py``), as a Counter."""

    def __enter__(self) -> collections.Counter:
        return super().__enter__().counts


def test_the_counter_sees_reads():
    with HostReads() as counts:
        x = torch.ones(3)
        bool(x.any())
        float(x.sum())
        x.sum().item()
    assert sum(counts.values()) == 3


def test_sync_free_pinqi_forward_and_backward_read_the_host_at_most_once():
    # the cpu-brainweb network (T = 3, its widths and solver settings) on 2 samples of
    # 96 x 96 of the built-in phantom
    config = ExperimentConfig.from_yaml("configs/cpu-brainweb.yaml")
    data_config = replace(config.data, anatomy="builtin", brainweb_dir=None)
    dataset = SimulatedDataset(data_config.without_coverage(), "val", 2, seed=0)
    batch = {k: torch.stack([dataset[i][k] for i in range(2)]) for k in dataset[0]}
    torch.manual_seed(0)
    # sync_free "always": what accelerators run ("auto" on the CPU gathers unconverged pixels with
    # host reads, which cost nothing there)
    model_config = replace(config.model, sync_free="always")
    net = PINQI.from_config(model_config, "saturation", config.data.tau)
    with HostReads() as counts:
        out = net(batch["kspace"], batch["coil_maps"], batch["mask"])
        loss = pinqi_loss(out, batch["params"], batch["brain_mask"], 0.05, 0.01)
        loss.backward()
    assert sum(counts.values()) <= 1, counts  # the input checks, read together once
    assert all(p.grad is not None for p in net.parameters())


def test_input_checks_inside_one_read_still_name_the_problem():
    kspace = torch.ones(1, 2, 1, 4, 4, dtype=torch.complex64)
    kspace[0, 0, 0, 0, 0] = float("nan")
    coils = torch.ones(1, 1, 4, 4, dtype=torch.complex64)
    mask = torch.ones(1, 2, 1, 4)
    with pytest.raises(ValueError, match="kspace contains NaN or Inf"), one_read():
        CartesianAcquisition(coils, mask).check_kspace("kspace", kspace)
    mask[0, 1] = 0
    with pytest.raises(ValueError, match="all-zero mask"), one_read():
        CartesianAcquisition(coils, mask)


def test_one_read_raises_the_first_failed_check_in_order():
    with HostReads() as counts, pytest.raises(ValueError, match="second"), one_read():
        require(torch.tensor(True), "first")
        require(torch.tensor(False), "second")
        require(torch.tensor(False), "third")
    assert counts["__bool__"] >= 2  # the combined read, then the search for the culprit
    with HostReads() as counts, one_read():
        for _ in range(5):
            require(torch.tensor(True), "never")
    assert sum(counts.values()) == 1


def test_cg_without_early_exit_equals_cg_with_it():
    k, coils, mask, lambdas, priors = problem()
    acquisition = CartesianAcquisition(coils, mask)
    rhs = acquisition.adjoint(k) + lambdas[0].reshape(-1, 1, 1, 1) * priors[0]

    def operator(y):
        return acquisition.gram(y) + lambdas[0].reshape(-1, 1, 1, 1) * y

    early, info_early = conjugate_gradient(operator, rhs, max_iter=200, tol=1e-10)
    fixed, info_fixed = conjugate_gradient(operator, rhs, max_iter=200, tol=1e-10, early_exit=False)
    assert info_early.iterations < 200 and info_fixed.iterations == 200
    torch.testing.assert_close(fixed, early, rtol=0, atol=1e-12)
    torch.testing.assert_close(info_fixed.residual, info_early.residual)


def test_sync_free_data_consistency_gradients_equal_the_early_exit_ones():
    k, coils, mask, lambdas, priors = problem()
    acquisition = CartesianAcquisition(coils, mask)

    def gradients(early_exit):
        lams = [lam.expand(2).clone().requires_grad_() for lam in lambdas]
        ys = [p.clone().requires_grad_() for p in priors]
        y, _ = solve_data_consistency(
            acquisition, k, lams, ys, max_iter=200, tol=1e-11, early_exit=early_exit
        )
        y.abs().square().sum().backward()
        return [y.detach(), *(x.grad for x in lams + ys)]

    for a, b in zip(gradients(False), gradients(True), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("noise", [0.01, 0.3])
def test_sync_free_newton_equals_the_compacting_newton(noise):
    model = SaturationRecovery(TAU)
    images, p_reg, lam, _ = fit_problem(model, shape=(8, 8), noise=noise, lam=0.05)
    lam = lam[:, None].expand(2, 3)

    def solve(sync_free):
        y, reg, strength = (x.clone().requires_grad_() for x in (images, p_reg, lam))
        p, info = solve_signal_fit(
            model, y, reg, strength, p_reg, max_iter=60, tol=1e-12, sync_free=sync_free
        )
        (p * torch.linspace(0.5, 1.5, p.numel()).reshape(p.shape)).sum().backward()
        return p.detach(), y.grad, reg.grad, strength.grad, info

    *fixed, info_fixed = solve(True)
    *compacted, info_compacted = solve(False)
    assert info_fixed.iterations == 60 and info_compacted.iterations < 60
    assert bool(info_fixed.converged.all()) and bool(info_compacted.converged.all())
    for a, b in zip(fixed, compacted, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def test_pinqi_maps_and_gradients_do_not_depend_on_sync_free():
    model, kspace, coils, mask, truth = tiny_problem(size=16)

    def run(mode):
        torch.manual_seed(0)
        config = replace(TINY, sync_free=mode, cg_iterations=30, fit_iterations=30)
        net = PINQI(model, config).double()
        out = net(kspace.to(torch.complex128), coils.to(torch.complex128), mask)
        ((out.parameters[-1] - truth.double()) ** 2).mean().backward()
        return out.parameters[-1].detach(), net.raw_lambda_p.grad, net.raw_lambda_y.grad

    for a, b in zip(run("always"), run("never"), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_an_unknown_sync_free_mode_is_refused():
    with pytest.raises(ValueError, match="sync_free must be"):
        PINQIConfig(sync_free="sometimes")


def test_sync_free_modes_survive_yaml():
    config = ExperimentConfig().with_overrides(["model.sync_free=always"])
    assert config.model.sync_free == "always"
    assert ExperimentConfig().with_overrides(["model.sync_free=never"]).model.sync_free == "never"
