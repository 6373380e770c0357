"""The conv model's speed settings (memory layout, the output layer's matmul) must not change
what the model computes."""

from __future__ import annotations

import pytest
import torch

from vaelab.models.conv import ConvVAE, ImageOutputLayer
from vaelab.objectives.betavae import BetaVAE


def test_channels_last_is_the_default_and_computes_what_nchw_computes():
    torch.manual_seed(0)
    nchw = ConvVAE((1, 64, 64), True, channels_last=False)
    fast = ConvVAE((1, 64, 64), True)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters() if p.dim() == 4)
    assert not all(p.is_contiguous(memory_format=torch.channels_last) for p in nchw.parameters() if p.dim() == 4)
    # a checkpoint of either layout loads into the other (what older NCHW runs need)
    fast.load_state_dict(nchw.state_dict())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters() if p.dim() == 4)

    images = (torch.rand(16, 1, 64, 64, generator=torch.Generator().manual_seed(1)) > 0.9).float()
    noise = torch.randn(16, 10, generator=torch.Generator().manual_seed(2))
    losses, grads = [], []
    for model in (nchw, fast):
        model.zero_grad()
        loss = BetaVAE()(model(images, noise))["loss"]
        loss.backward()
        losses.append(loss.detach())
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-4)  # round-off only
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-3, atol=1e-4, msg=name)


def _transposed_conv_twin(layer: torch.nn.ConvTranspose2d) -> torch.nn.ConvTranspose2d:
    """A plain ConvTranspose2d with the layer's parameters, strides included (they pick oneDNN's kernel)."""
    twin = torch.nn.ConvTranspose2d(layer.in_channels, layer.out_channels, 4, stride=2, padding=1)
    twin.weight = torch.nn.Parameter(layer.weight.detach().clone())
    twin.bias = torch.nn.Parameter(layer.bias.detach().clone())
    return twin


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_the_one_channel_output_layer_computes_the_transposed_convolution(layout):
    torch.manual_seed(0)
    layer = ImageOutputLayer(32, 1).to(memory_format=torch.channels_last)
    twin = _transposed_conv_twin(layer)
    x = torch.randn(8, 32, 32, 32).contiguous(memory_format=layout).requires_grad_()
    upstream = torch.randn(8, 1, 64, 64)

    out = layer(x)
    assert type(out.grad_fn).__name__ == "_OneChannelTransposedConvBackward"  # the matmul path ran
    expected = twin(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)  # float round-off only
    grads = torch.autograd.grad(out, [x, layer.weight, layer.bias], upstream)
    expected_grads = torch.autograd.grad(expected, [x, twin.weight, twin.bias], upstream)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)  # oneDNN's own backward


@pytest.mark.parametrize("case", ["three channels", "float64", "bf16 autocast"])
def test_the_output_layer_leaves_other_cases_to_the_transposed_convolution(case):
    torch.manual_seed(0)
    layer = ImageOutputLayer(32, 3 if case == "three channels" else 1)
    x = torch.randn(4, 32, 32, 32)
    if case == "float64":
        layer, x = layer.double(), x.double()
    twin = _transposed_conv_twin(layer)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "bf16 autocast"):
        out, expected = layer(x), twin(x)
    assert out.dtype == expected.dtype
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert "_OneChannel" not in type(out.grad_fn).__name__
