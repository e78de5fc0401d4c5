from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pinqi.nets import PINQI, PINQIConfig, UNet
from pinqi.nets.blocks import FactorisedConv3d
from pinqi.nets.precision import unet_autocast, uses_bf16

from test_nets import TINY, tiny_problem


@pytest.mark.parametrize(
    "options",
    [
        {"kernel_size": (1, 3, 3), "padding": (0, 1, 1)},
        {"kernel_size": 1},
        {
            "kernel_size": (3, 1, 1),
            "padding": (1, 0, 0),
            "padding_mode": "replicate",
            "bias": False,
        },
        {"kernel_size": (3, 1, 1), "padding": (1, 0, 0)},
    ],
)
def test_factorised_conv3d_equals_conv3d_with_the_same_weights(options):
    torch.manual_seed(0)
    reference = nn.Conv3d(6, 4, **options).double()
    factorised = FactorisedConv3d(6, 4, **options).double()
    factorised.load_state_dict(reference.state_dict())
    x = torch.randn(2, 6, 5, 8, 12, dtype=torch.float64, requires_grad=True)
    expected, got = reference(x), factorised(x)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    weight = torch.randn_like(expected)
    grads = torch.autograd.grad((expected * weight).sum(), [x, *reference.parameters()])
    grads_f = torch.autograd.grad((got * weight).sum(), [x, *factorised.parameters()])
    for a, b in zip(grads_f, grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _conv3d(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """torch's own Conv3d with the weights of a FactorisedConv3d."""
    return nn.Conv3d.forward(conv, x)


def _reference_block(block, x, embedding):
    """A pseudo-3D residual block written with torch's 3D operations."""
    norm1, norm2 = block.norm1, block.norm2
    h = F.group_norm(_conv3d(block.conv1, x), norm1.num_groups, norm1.weight, norm1.bias, norm1.eps)
    if block.film is not None:
        scale, shift = block.film.linear(embedding).chunk(2, dim=1)
        h = h * (1 + scale[..., None, None, None]) + shift[..., None, None, None]
    h = _conv3d(block.frame_conv, _conv3d(block.conv2, F.silu(h)))
    h = F.group_norm(h, norm2.num_groups, norm2.weight, norm2.bias, norm2.eps)
    skip = _conv3d(block.skip, x) if isinstance(block.skip, nn.Conv3d) else x
    return F.silu(block.alpha * h + skip)


def _reference_pseudo3d_unet(net: UNet, x: torch.Tensor, iteration: torch.Tensor) -> torch.Tensor:
    """The pseudo-3D UNet (paper Sec. 3.2) with Conv3d, 3D max pooling of kernel (1, 2, 2)
    and trilinear upsampling of scale (1, 2, 2): what the 2D-based code must compute."""
    embedding = net.embedding(iteration)
    skips = []
    for block in net.encoder:
        x = _reference_block(block, x, embedding)
        skips.append(x)
        x = F.max_pool3d(x, (1, 2, 2))
    x = _reference_block(net.bottleneck, x, None)
    for up, block, skip in zip(net.up, net.decoder, reversed(skips), strict=True):
        x = F.interpolate(x, scale_factor=(1, 2, 2), mode="trilinear", align_corners=False)
        x = _reference_block(block, torch.cat([skip, _conv3d(up, x)], dim=1), embedding)
    return _conv3d(net.head, x)


def test_pseudo3d_unet_equals_its_3d_definition():
    torch.manual_seed(0)
    net = UNet(2, 2, (4, 8, 12), pseudo3d=True, embedding_dim=8, norm_groups=4).double()
    for module in net.modules():  # leave the identity-like initialisation
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.3)
            nn.init.normal_(module.bias, std=0.3)
    for block in [*net.encoder, net.bottleneck, *net.decoder]:
        block.alpha.data.fill_(0.7)
    x = torch.randn(2, 2, 5, 16, 24, dtype=torch.float64, requires_grad=True)
    iteration = torch.tensor([0.0, 2.0], dtype=torch.float64)
    expected = _reference_pseudo3d_unet(net, x, iteration)
    got = net(x, iteration)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    weight = torch.randn_like(expected)
    params = list(net.parameters())
    grads = torch.autograd.grad((expected * weight).sum(), [x, *params])
    grads_net = torch.autograd.grad((got * weight).sum(), [x, *params])
    for a, b in zip(grads_net, grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_factorised_conv3d_refuses_a_full_3d_kernel():
    with pytest.raises(ValueError, match=r"kernel \(1, k, k\) or \(k, 1, 1\)"):
        FactorisedConv3d(2, 2, (3, 3, 3))


def test_bf16_pseudo3d_unet_trains_forward_and_backward():
    # PyTorch's CPU Conv3d backward crashed in bfloat16 for these widths (segmentation fault)
    torch.manual_seed(0)
    net = UNet(2, 2, (8, 16, 24, 32), pseudo3d=True, norm_groups=8)
    x = torch.randn(2, 2, 5, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, torch.zeros(2))
    assert out.dtype == torch.bfloat16
    out.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_uses_bf16_only_for_float32_inputs():
    x32, x64 = torch.zeros(1), torch.zeros(1, dtype=torch.float64)
    assert uses_bf16("bf16", x32)
    assert not uses_bf16("bf16", x64)
    assert not uses_bf16("fp32", x32)
    assert not uses_bf16("auto", x64)


def test_autocast_applies_to_the_unets_only():
    x = torch.randn(2, 3)
    linear = nn.Linear(3, 3)
    with unet_autocast("bf16", x):
        assert linear(x).dtype == torch.bfloat16
    with unet_autocast("fp32", x):
        assert linear(x).dtype == torch.float32


def test_unknown_unet_precision_is_refused():
    with pytest.raises(ValueError, match="unet_precision must be one of"):
        PINQIConfig(unet_precision="fp16")


def _reconstruct(precision: str, dtype: torch.dtype) -> tuple[PINQI, torch.Tensor]:
    model, kspace, coils, mask, _ = tiny_problem(size=32)
    torch.manual_seed(0)
    net = PINQI(model, replace(TINY, unet_precision=precision)).to(dtype)
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    out = net(kspace.to(complex_dtype), coils.to(complex_dtype), mask)
    return net, out.parameters[-1]


def test_bf16_unets_change_the_maps_by_bf16_rounding_only():
    _, p32 = _reconstruct("fp32", torch.float32)
    _, p16 = _reconstruct("bf16", torch.float32)
    assert p16.dtype == torch.float32
    assert not torch.equal(p16, p32)  # the UNets did run in bfloat16
    scale = p32.abs().flatten(2).amax(-1)[..., None, None]
    assert ((p16 - p32).abs() / scale).max() < 0.02


def test_float64_networks_are_never_autocast():
    _, exact = _reconstruct("fp32", torch.float64)
    _, asked_bf16 = _reconstruct("bf16", torch.float64)
    assert asked_bf16.dtype == torch.float64
    torch.testing.assert_close(asked_bf16, exact, rtol=0, atol=0)


def test_activation_checkpointing_gives_the_same_gradients():
    model, kspace, coils, mask, truth = tiny_problem(size=16)

    def gradients(checkpoint_unets):
        torch.manual_seed(0)
        config = replace(TINY, unet_precision="fp32", checkpoint_unets=checkpoint_unets)
        net = PINQI(model, config).double()
        out = net(kspace.to(torch.complex128), coils.to(torch.complex128), mask)
        ((out.parameters[-1] - truth.double()) ** 2).mean().backward()
        return {n: p.grad for n, p in net.named_parameters() if p.grad is not None}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.slow
def test_compiled_unets_give_the_same_maps_and_gradients_and_keep_the_checkpoint_layout():
    model, kspace, coils, mask, _ = tiny_problem(size=16)

    def run(compile_unets):
        torch.manual_seed(0)
        config = replace(TINY, unet_precision="fp32", compile_unets=compile_unets)
        net = PINQI(model, config)
        maps = net(kspace, coils, mask).parameters[-1]
        maps.square().mean().backward()  # the backward of Y_theta's frame padding broke compile
        return net, maps.detach(), {n: p.grad for n, p in net.named_parameters()}

    plain_net, plain, plain_grads = run(False)
    compiled_net, compiled, compiled_grads = run(True)
    torch.testing.assert_close(compiled, plain, rtol=1e-4, atol=1e-5)
    assert compiled_net.state_dict().keys() == plain_net.state_dict().keys()
    for name, grad in plain_grads.items():
        if grad is not None:
            scale = grad.abs().max().clamp_min(1e-6)
            torch.testing.assert_close(
                compiled_grads[name] / scale, grad / scale, rtol=0, atol=1e-3
            )
