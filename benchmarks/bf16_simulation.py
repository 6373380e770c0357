"""bfloat16 mixed precision's round-off, computed in float32: for CPUs without native bfloat16.

On such a CPU (AVX2 only) oneDNN emulates bfloat16 several times slower than float32,
so a bf16 training run cannot be studied there at full length. This plugin trains in
float32 with the rounding that ``trainer.precision=bf16-mixed`` applies under autocast:
every operation that autocast runs in bfloat16 on the CPU (convolutions, linear layers,
matrix products) gets its floating-point inputs (weights and bias included) and its
output rounded to bfloat16, and in the backward pass the gradients that flow through
those roundings are rounded too. Products are accumulated in float32 between roundings,
as native bfloat16 kernels (AVX-512 BF16, AMX, tensor cores) do. Regions where a model
turns autocast off stay float32, as they do in a real bf16 run.

What it does not reproduce: a kernel's own internal rounding. Against oneDNN's emulated
bf16 on an AVX2 CPU, linear layers agree to the bit and convolution outputs to float32
round-off, but convolution gradients do not: that kernel rounds partial sums
(docs/performance.md, "The parity study", has the comparison). Native kernels may or
may not; only a run on native hardware settles it.

    PYTHONPATH=. python benchmarks/bf16_parity.py --simulate

uses it (``trainer.plugins`` takes the plugin, ``trainer.precision`` is then null).
"""

from __future__ import annotations

import torch
from pytorch_lightning.plugins.precision import Precision
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

# The operations autocast runs in bfloat16 on the CPU (torch's autocast documentation,
# "CPU Ops that can autocast to bfloat16"), as Python-level functions.
LOWER_PRECISION_OPS = frozenset(
    [
        torch.conv1d, torch.conv2d, torch.conv3d,
        torch.conv_transpose1d, torch.conv_transpose2d, torch.conv_transpose3d,
        F.linear, torch.matmul, torch.mm, torch.bmm, torch.baddbmm, torch.addmm, torch.addbmm,
        F.prelu, F.scaled_dot_product_attention,
    ]
)  # fmt: skip


class _RoundToBFloat16(torch.autograd.Function):
    """x rounded to the nearest bfloat16 (kept in x's dtype); its gradient rounded the same way."""

    @staticmethod
    def forward(ctx, x):
        return x.to(torch.bfloat16).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad.to(torch.bfloat16).to(grad.dtype)


def _rounded(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return _RoundToBFloat16.apply(value)
    return value


class SimulatedBFloat16(TorchFunctionMode):
    """Inside ``torch.autocast(..., dtype=torch.bfloat16)``: the lower-precision operations
    run in float32 on bf16-rounded inputs, their outputs rounded to bf16. Outside autocast
    (or where it is disabled) nothing changes."""

    def __init__(self, device_type: str = "cpu") -> None:
        super().__init__()
        self.device_type = device_type

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in LOWER_PRECISION_OPS or not torch.is_autocast_enabled(self.device_type):
            return func(*args, **kwargs)
        with torch.autocast(self.device_type, enabled=False):
            result = func(*[_rounded(a) for a in args], **{k: _rounded(v) for k, v in kwargs.items()})
        return _rounded(result)


class SimulatedBF16Precision(Precision):
    """Lightning precision plugin: float32 training with bf16-mixed's round-off (see above).

    Autocast stays on (so a model's float32 regions and autocast's float32 operations behave
    as in a real bf16 run); the operations it would run in bfloat16 are intercepted first.
    """

    precision = "32-true"

    def forward_context(self):
        import contextlib

        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
        stack.enter_context(SimulatedBFloat16("cpu"))
        return stack
