import pytest
import torch

from pinqi.nets import PINQI, PINQIConfig, UNet
from pinqi.nets.blocks import FiLM, ResidualBlock
from pinqi.nets.pinqi import LAMBDA_BETA, inverse_softplus
from pinqi.physics import SaturationRecovery, birdcage_maps, variable_density_mask

TINY = PINQIConfig(
    iterations=2,
    image_features=(8, 16),
    parameter_features=(8, 16),
    cg_iterations=3,
    fit_iterations=3,
)


def tiny_problem(batch=2, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = SaturationRecovery((0.5, 1.0, 2.0))
    coils = birdcage_maps(4, (size, size), batch_size=batch, generator=gen)
    mask = variable_density_mask(batch, 3, size, acceleration=2, generator=gen)
    truth = torch.stack(
        [
            0.5 + 0.5 * torch.rand(batch, size, size, generator=gen),
            0.1 * torch.randn(batch, size, size, generator=gen),
            0.3 + 2 * torch.rand(batch, size, size, generator=gen),
        ],
        1,
    )
    images = model(truth)
    kspace = torch.fft.fftshift(
        torch.fft.fft2(
            torch.fft.ifftshift(images.unsqueeze(2) * coils.unsqueeze(1), dim=(-2, -1)),
            norm="ortho",
        ),
        dim=(-2, -1),
    )
    kspace = kspace * mask.unsqueeze(2)
    return model, kspace, coils, mask, truth


def test_unrolled_shapes_and_iterates():
    model, kspace, coils, mask, _ = tiny_problem()
    net = PINQI(model, TINY)
    out = net(kspace, coils, mask)
    assert len(out.parameters) == len(out.images) == len(out.parameter_priors) == 3
    assert all(p.shape == (2, 3, 16, 16) for p in out.parameters)
    assert all(y.shape == (2, 3, 16, 16) and y.is_complex() for y in out.images)
    assert torch.isfinite(out.parameters[-1]).all()


def test_gradients_reach_every_weight_and_strength():
    model, kspace, coils, mask, truth = tiny_problem()
    net = PINQI(model, TINY)

    def backward():
        net.zero_grad()
        out = net(kspace, coils, mask)
        sum(((p - truth) ** 2).mean() for p in out.parameters).backward()

    # FiLM starts as the identity (zero weights), so the iteration embedding gets its first
    # gradient after one step
    backward()
    torch.optim.Adam(net.parameters(), lr=1e-3).step()
    backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_strengths_initialised_as_in_the_paper():
    net = PINQI(SaturationRecovery((0.5, 1.0)), PINQIConfig(iterations=3))
    lam = net.strengths()
    torch.testing.assert_close(lam["lambda_p"], torch.full((3,), 3.0))
    torch.testing.assert_close(lam["lambda_y"], torch.full((3,), 0.1))
    torch.testing.assert_close(lam["lambda_q"], torch.tensor([0.15, 0.2, 0.25]))
    assert inverse_softplus(2.0, LAMBDA_BETA) == pytest.approx(
        float(torch.nn.functional.softplus(torch.tensor(1.0), beta=5) * 0 + 0)
        + inverse_softplus(2.0)
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"use_image_regulariser": False},
        {"use_parameter_regulariser": False},
        {"use_signal_fit": False},
        {"iterate_networks": False},
    ],
)
def test_ablations_run(changes):
    model, kspace, coils, mask, truth = tiny_problem()
    config = PINQIConfig(**{**TINY.__dict__, **changes})
    net = PINQI(model, config)
    out = net(kspace, coils, mask)
    ((out.parameters[-1] - truth) ** 2).mean().backward()
    if changes.get("use_image_regulariser") is False:
        assert net.image_net is None


def test_parameter_counts_match_the_paper():
    net = PINQI(SaturationRecovery((0.5, 1.0, 1.5, 2.0, 8.0)), PINQIConfig())
    parameter = sum(p.numel() for p in net.parameter_net.parameters())
    image = sum(p.numel() for p in net.image_net.parameters())
    assert abs(parameter - 2_235_308) / 2_235_308 < 0.001
    film = sum(
        p.numel() for n, p in net.image_net.named_parameters() if "film" in n or "embedding" in n
    )
    assert abs(image - film - 597_323) / 597_323 < 0.001  # the paper's count without FiLM


def test_unet_blocks_start_pixelwise():
    block = ResidualBlock(4, 4, pseudo3d=False, embedding_dim=8)
    x = torch.randn(2, 4, 8, 8)
    out = block(x, torch.zeros(2, 8))
    torch.testing.assert_close(out, torch.nn.functional.silu(x), atol=0.05, rtol=0)
    film = FiLM(8, 4)
    torch.testing.assert_close(film(x, torch.randn(2, 8)), x)


def test_unet_rejects_indivisible_size():
    net = UNet(2, 3, (8, 16, 24))
    with pytest.raises(ValueError, match="divisible by 2\\*\\*3"):
        net(torch.randn(1, 2, 12, 12), torch.zeros(1))


def test_pseudo3d_unet_shape():
    net = UNet(2, 2, (8, 16), pseudo3d=True)
    assert net(torch.randn(2, 2, 5, 16, 16), torch.ones(2)).shape == (2, 2, 5, 16, 16)
