import pytest
import torch

from pinqi.physics import InversionRecovery, InversionRecoveryAB, SaturationRecovery
from pinqi.physics.signal_models import SignalModel, stack_complex

from conftest import TAU, random_ab_parameters, random_parameters

MODELS = [SaturationRecovery, InversionRecovery, InversionRecoveryAB]


def parameters_for(model, batch, shape, generator):
    if model.n_params == 5:
        return random_ab_parameters(batch, shape, generator)
    return random_parameters(batch, shape, generator)


def autograd_jacobian(model, p):
    """dq/dp by autograd for a single pixel p (P,) -> complex (n_tau, P)."""

    def real_q(x):
        return stack_complex(model(x.reshape(1, -1, 1)))[0, :, 0]

    jac = torch.autograd.functional.jacobian(real_q, p)
    n = jac.shape[0] // 2
    return torch.complex(jac[:n], jac[n:])


@pytest.mark.parametrize("model_cls", MODELS)
def test_jacobian_matches_autograd(model_cls, generator):
    model = model_cls(TAU)
    p = parameters_for(model, 1, (6,), generator)
    analytic = model.jacobian(p)
    for i in range(6):
        reference = autograd_jacobian(model, p[0, :, i])
        torch.testing.assert_close(analytic[0, :, :, i], reference)


@pytest.mark.parametrize("model_cls", MODELS)
def test_hessian_matches_autograd(model_cls, generator):
    model = model_cls(TAU)
    p = parameters_for(model, 1, (4,), generator)
    analytic = model.hessian(p)
    for i in range(4):
        for part in (torch.real, torch.imag):
            for t in range(model.n_tau):

                def q_t(x, t=t, part=part):
                    return part(model(x.reshape(1, -1, 1))[0, t, 0])

                reference = torch.autograd.functional.hessian(q_t, p[0, :, i])
                torch.testing.assert_close(part(analytic[0, t, :, :, i]), reference)


@pytest.mark.parametrize("model_cls", MODELS)
def test_closed_forms_match_generic_interface(model_cls, generator):
    model = model_cls(TAU)
    p = parameters_for(model, 2, (5,), generator)
    residual = torch.randn(2, 2 * model.n_tau, 5, generator=generator, dtype=torch.float64)
    fast = model.normal_terms(p, residual)
    generic = SignalModel.normal_terms(model, p, residual)
    for a, b in zip(fast, generic, strict=True):
        torch.testing.assert_close(a, b)
    v = torch.randn(2, model.n_params, 5, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(
        model.jacobian_vector_product(p, v), SignalModel.jacobian_vector_product(model, p, v)
    )
    torch.testing.assert_close(model.stacked_forward(p), stack_complex(model(p)))


def test_saturation_recovery_values():
    model = SaturationRecovery([1.0, 2.0])
    p = torch.tensor([[[0.8], [0.1], [1 / 1.5]]], dtype=torch.float64)
    expected = torch.complex(torch.tensor(0.8), torch.tensor(0.1)).to(torch.complex128) * (
        1 - torch.exp(-torch.tensor([1.0, 2.0], dtype=torch.float64) / 1.5)
    )
    torch.testing.assert_close(model(p)[0, :, 0], expected)


def test_inversion_recovery_values():
    model = InversionRecovery([0.0, 100.0])
    p = torch.tensor([[[1.0], [0.0], [1.0]]], dtype=torch.float64)
    torch.testing.assert_close(model(p)[0, :, 0], torch.tensor([-1.0, 1.0], dtype=torch.complex128))


def test_per_sample_delays(generator):
    tau = torch.tensor([[0.5, 1.0], [1.0, 3.0]])
    model = SaturationRecovery(tau)
    p = random_parameters(2, (3, 3), generator, dtype=torch.float32)
    q = model(p)
    assert q.shape == (2, 2, 3, 3)
    torch.testing.assert_close(q[1], SaturationRecovery(tau[1])(p[1:])[0])


def test_float32_gives_complex64(generator):
    p = random_parameters(1, (2, 2), generator, dtype=torch.float32)
    assert SaturationRecovery(TAU)(p).dtype == torch.complex64


@pytest.mark.parametrize(
    ("tau", "message"),
    [
        ([0.5, float("nan")], "NaN"),
        ([0.5, -1.0], "non-negative"),
        ([[[0.5]]], "shape"),
        ([], "shape"),
    ],
)
def test_bad_delays_raise(tau, message):
    with pytest.raises(ValueError, match=message):
        SaturationRecovery(tau)


def test_inversion_recovery_error_names_ti():
    with pytest.raises(ValueError, match="ti"):
        InversionRecovery([-1.0])


def test_bad_parameters_raise():
    model = SaturationRecovery(TAU)
    with pytest.raises(ValueError, match="p_reg"):
        model.check_parameters("p_reg", torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        model.check_parameters("p_reg", torch.full((1, 3, 4, 4), float("nan")))
