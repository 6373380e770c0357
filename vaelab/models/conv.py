"""The standard convolutional architecture of the β-VAE literature for 64x64 images.

Higgins et al. (2017), Locatello et al. (2019, Table 1):
encoder conv 4x4/2 with 32, 32, 64, 64 channels (ReLU), fc 256, fc 2*latent_dim;
decoder fc 256, fc 64*4*4, transposed conv 4x4/2 with 64, 32, 32, C channels.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from vaelab.errors import UserError
from vaelab.models.vae import VAE, _check_latent_dim


def conv_encoder(channels: int, latent_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, 32, 4, stride=2, padding=1), nn.ReLU(),  # 32x32
        nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),  # 16x16
        nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),  # 8x8
        nn.Conv2d(64, 64, 4, stride=2, padding=1), nn.ReLU(),  # 4x4
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 256), nn.ReLU(),
        nn.Linear(256, 2 * latent_dim),  # mean and log-variance
    )  # fmt: skip


def conv_decoder(channels: int, latent_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(latent_dim, 256), nn.ReLU(),
        nn.Linear(256, 64 * 4 * 4), nn.ReLU(),
        nn.Unflatten(1, (64, 4, 4)),
        nn.ConvTranspose2d(64, 64, 4, stride=2, padding=1), nn.ReLU(),  # 8x8
        nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),  # 16x16
        nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),  # 32x32
        ImageOutputLayer(32, channels),  # 64x64 logits
    )  # fmt: skip


class ImageOutputLayer(nn.ConvTranspose2d):
    """The decoder's last layer, ``ConvTranspose2d(in_channels, out_channels, 4, stride=2,
    padding=1)``: same parameters, same state-dict keys, same result.

    With one output channel on a CPU in float32, its forward pass is one matmul instead
    of oneDNN's transposed convolution, whose kernel for a single output channel is the
    slowest layer of a training step (docs/performance.md). The backward pass is oneDNN's
    own, so the gradients are bit for bit the transposed convolution's.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.out_channels == 1
            and x.device.type == "cpu"
            and x.dtype == self.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
        ):
            return _OneChannelTransposedConv.apply(x, self.weight, self.bias)
        return super().forward(x)


class _OneChannelTransposedConv(torch.autograd.Function):
    """conv_transpose2d(x, weight, bias, stride=2, padding=1) for a 4x4 kernel.

    Output pixel (2m + p - 1, 2n + r - 1), p, r in {0, 1}, sums input pixels (m - a, n - b),
    a, b in {0, 1}, times kernel tap (2a + p, 2b + r). So one matmul gives every input pixel's
    16 tap products, grouped by (a, b); the four groups are added at their shifts onto a
    (H + 1) x (W + 1) grid of 2x2 sub-pixel blocks (p, r), which a pixel shuffle lays out
    as the image, and the border row and column the padding removes are cut off.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        batch, channels, height, width = x.shape
        out_channels = weight.shape[1]
        pixels = x.permute(0, 2, 3, 1).reshape(batch, height * width, channels)  # a view when NHWC
        # weight (c, o, ky = 2a + p, kx = 2b + r) -> rows ordered (a, b, o, p, r)
        taps = weight.view(channels, out_channels, 2, 2, 2, 2).permute(2, 4, 1, 3, 5, 0).reshape(-1, channels)
        products = torch.matmul(taps, pixels.transpose(1, 2)).view(batch, 4, 4 * out_channels, height, width)
        blocks = x.new_zeros(batch, 4 * out_channels, height + 1, width + 1)
        for group, (a, b) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            blocks[:, :, a : a + height, b : b + width] += products[:, group]
        out = F.pixel_shuffle(blocks, 2)[:, :, 1:-1, 1:-1]
        if bias is not None:
            out = out + bias.view(1, out_channels, 1, 1)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad
        return torch.ops.aten.convolution_backward(
            grad, x, weight, [weight.shape[1]] if ctx.has_bias else None,
            [2, 2], [1, 1], [1, 1], True, [0, 0], 1,
            [needs_x, needs_weight, ctx.has_bias and needs_bias],
        )  # fmt: skip


class ConvVAE(VAE):
    """`model=conv`: the standard 64x64 architecture (the default)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        binary_data: bool,
        latent_dim: int = 10,
        likelihood: str = "auto",
        gaussian_std: float = 0.7071067811865476,
        channels_last: bool = True,
    ) -> None:
        _check_latent_dim(latent_dim)
        if not isinstance(channels_last, bool):
            raise UserError(f"model.channels_last={channels_last!r}: expected true or false")
        channels, height, width = image_shape
        if (height, width) != (64, 64):
            raise UserError(f"model=conv expects 64x64 images, the dataset has {height}x{width}; use model=mlp")
        super().__init__(
            conv_encoder(channels, latent_dim),
            conv_decoder(channels, latent_dim),
            latent_dim,
            likelihood,
            binary_data,
            gaussian_std,
        )
        # The channels-last (NHWC) layout is the one oneDNN's CPU kernels and cuDNN's tensor-core
        # kernels compute in; in NCHW every conv converts to it and back. The results differ
        # from NCHW's by float round-off only.
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return super().encode(x)


def fuse_conv_relu_for_inference(model: nn.Module) -> None:
    """Run each ``Conv2d`` that a ``ReLU`` follows in an ``nn.Sequential`` of ``model`` (a
    private copy used without gradients) as one oneDNN convolution with the ReLU as its
    post-op, the call torch's own compiler emits for this pattern.

    The ReLU then no longer reads and writes the convolution's whole output a second time,
    which at the metrics' encoding batch is much of what the first, widest layer costs on a
    CPU (docs/performance.md). The results are bit for bit the same. Where this torch build
    has no such op, the model is left as it is.
    """
    try:
        available = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._convolution_pointwise is not None
    except (AttributeError, RuntimeError):  # a build without the op
        available = False
    if not available:
        return
    for sequential in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        layers = list(sequential)
        for i, (layer, following) in enumerate(zip(layers, layers[1:])):
            if (
                type(layer) is nn.Conv2d
                and isinstance(following, nn.ReLU)
                and layer.padding_mode == "zeros"
                and not isinstance(layer.padding, str)  # "same" / "valid"
            ):
                sequential[i], sequential[i + 1] = ConvReLU(layer), nn.Identity()


class ConvReLU(nn.Module):
    """``relu(conv(x))`` in one oneDNN call (inference only: the op has no gradient)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        return torch.ops.mkldnn._convolution_pointwise(
            x, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation),
            conv.groups, "relu", [None], "",
        )  # fmt: skip
