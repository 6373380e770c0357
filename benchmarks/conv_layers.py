"""Time each convolution of the standard conv architecture alone, forward and forward+backward.

    PYTHONPATH=. python benchmarks/conv_layers.py [--batch-size 64] [--layouts nchw channels_last]

Shows which layers keep training below the matmul rate (docs/performance.md): each layer's
milliseconds and GFLOP/s, in each memory layout, at the shapes it has inside ConvVAE. Not part
of `make bench`; prints one human line per layer and layout, then JSON lines.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vaelab.models.conv import conv_decoder, conv_encoder  # noqa: E402
from vaelab.system import tune_glibc_malloc  # noqa: E402

# (layer, input shape per image) in the order they run
INPUT_SHAPES = [(1, 64, 64), (32, 32, 32), (32, 16, 16), (64, 8, 8)]
DECODER_INPUT_SHAPES = [(64, 4, 4), (64, 8, 8), (32, 16, 16), (32, 32, 32)]


def layers():
    encoder = [m for m in conv_encoder(1, 10) if isinstance(m, torch.nn.Conv2d)]
    decoder = [m for m in conv_decoder(1, 10) if isinstance(m, torch.nn.ConvTranspose2d)]
    yield from ((f"encoder conv {i + 1}", m, s) for i, (m, s) in enumerate(zip(encoder, INPUT_SHAPES)))
    yield from ((f"decoder convT {i + 1}", m, s) for i, (m, s) in enumerate(zip(decoder, DECODER_INPUT_SHAPES)))
    # the output layer as oneDNN's transposed convolution computes it (ImageOutputLayer's fallback)
    plain = torch.nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1)
    yield "decoder convT 4 oneDNN", plain, DECODER_INPUT_SHAPES[-1]


def forward_flops(layer, batch: int, shape) -> float:
    channels, height, width = shape
    kernel = layer.kernel_size[0] * layer.kernel_size[1]
    if isinstance(layer, torch.nn.ConvTranspose2d):  # every input pixel scatters a kernel per output channel
        return 2.0 * batch * channels * height * width * layer.out_channels * kernel
    return 2.0 * batch * layer.out_channels * (height // 2) * (width // 2) * channels * kernel


def seconds(fn, repeats: int = 10) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--layouts", nargs="+", default=["nchw", "channels_last"], choices=["nchw", "channels_last"])
    args = parser.parse_args()
    tune_glibc_malloc()
    figures = []
    for layout in args.layouts:
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        for name, layer, shape in layers():
            layer = layer.to(memory_format=fmt)
            first = shape[0] == 1  # the first layer needs no input gradient
            x = torch.randn(args.batch_size, *shape).contiguous(memory_format=fmt).requires_grad_(not first)
            grad = torch.randn_like(layer(x))

            def forward_backward():
                layer.zero_grad(set_to_none=True)
                x.grad = None
                layer(x).backward(grad)

            with torch.no_grad():
                forward = seconds(lambda: layer(x))
            both = seconds(forward_backward)
            flops = forward_flops(layer, args.batch_size, shape)
            passes = 2 if first else 3  # forward, weight gradient, input gradient
            print(f"{layout:13} {name:22} forward {forward * 1e3:6.2f} ms {flops / forward / 1e9:5.0f} GFLOP/s"
                  f"   forward+backward {both * 1e3:6.2f} ms {passes * flops / both / 1e9:5.0f} GFLOP/s")  # fmt: skip
            key = name.replace(" ", "_")
            figures += [
                {"name": f"conv_layers/{layout}/{key}/forward_ms", "value": round(forward * 1e3, 3), "unit": "ms"},
                {"name": f"conv_layers/{layout}/{key}/forward_backward_ms", "value": round(both * 1e3, 3), "unit": "ms"},
            ]
    for figure in figures:
        print(json.dumps(figure))


if __name__ == "__main__":
    main()
