"""The conv model's memory layout is a speed setting: it must not change what the model computes."""

from __future__ import annotations

import torch

from vaelab.models.conv import ConvVAE
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
