"""Training throughput of disent's β-VAE through its own Lightning loop, as a reference for vaelab.

    ~/disent-venv/bin/python benchmarks/framework_speed.py [--batch-sizes 64 256] [--steps 100] [--accelerator cuda]

Times disent's `BetaVae` framework (Bernoulli/BCE-with-logits reconstruction summed per
image, beta 1, Adam lr 5e-4: vaelab's defaults) on `AutoEncoder(EncoderConv64, DecoderConv64)`,
latent 10, trained by a `lightning.pytorch.Trainer` on in-memory dSprites-like binary 64x64
images. Steps after a warm-up of 20 are timed by a callback, as in vaelab's
`benchmarks/train_speed.py`, whose `train_images_per_s_batch*` figures these are compared
against: run both in the same session, on the same machine state.

One difference in the model: disent's EncoderConv64 pads its convs by 2, not 1 (feature maps
33/17/9/5, fc 1600->256), so its encoder does ~23% more FLOPs than vaelab's (32/16/8/4, fc
1024->256) and the whole model ~12% more; the decoder is the same layer for layer.

Install (disent 0.9.x needs Python >= 3.12, PEP 695 syntax, and there is no torch 2.13 CPU wheel
for 3.12 here; 0.8.0 is the newest that runs on 3.11, and its β-VAE path differs from 0.9.3
only in type hints and one isinstance check a step). disent is built on the `lightning` package, not `pytorch_lightning`:

    python -m venv --system-site-packages ~/disent-venv
    ~/disent-venv/bin/pip install --no-deps disent==0.8.0 lightning==2.6.6

Leave torchvision out: PyPI's wheels link against CUDA torch and break `import lightning`
next to torch+cpu; the stand-in below covers disent's module-level torchvision imports.
Prints one human line and one JSON line per batch size: {"name", "value", "unit"}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import types
import warnings

import torch

WARMUP_STEPS = 20
INSTALL = "python -m venv --system-site-packages ~/disent-venv && ~/disent-venv/bin/pip install --no-deps disent==0.8.0 lightning==2.6.6"


def stub_torchvision() -> None:
    """disent imports torchvision at module level only for image-folder datasets, resize
    transforms and DfcVae's VGG loss, none of which a β-VAE on tensors touches."""
    if importlib.util.find_spec("torchvision") is not None:
        return
    names = ("torchvision", "torchvision.datasets", "torchvision.models", "torchvision.transforms", "torchvision.transforms.functional")
    modules = {name: types.ModuleType(name) for name in names}
    for name, module in modules.items():
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, module)
    modules["torchvision.datasets"].ImageFolder = object  # a base class in disent.dataset.data
    modules["torchvision.models"].vgg19_bn = None


warnings.filterwarnings("ignore", "failed to JIT compile")  # disent's optional numba, off the timed path
try:
    import lightning.pytorch as pl

    stub_torchvision()
    from disent.frameworks.vae import BetaVae
    from disent.model import AutoEncoder
    from disent.model.ae import DecoderConv64, EncoderConv64
except Exception as error:  # ImportError, or a broken torchvision raising at import
    print(f"disent not importable ({error!r}); install it with: {INSTALL}")
    print(json.dumps({"name": "disent_train_images_per_s", "value": None, "unit": "skipped: disent not installed"}))
    sys.exit(0)


class Batches(torch.utils.data.Dataset):
    """Whole batches cut from a small pre-generated pool, so no per-image collation is timed.
    disent's datasets yield {'x_targ': (x,)}: one tensor per observation its framework needs."""

    def __init__(self, batch_size: int, steps: int, pool_batches: int = 4) -> None:
        generator = torch.Generator().manual_seed(0)
        pool = (torch.rand(pool_batches * batch_size, 1, 64, 64, generator=generator) > 0.9).float()  # dSprites-like sparsity
        self.batches = pool.split(batch_size)
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> dict:
        return {"x_targ": (self.batches[index % len(self.batches)],)}


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.started: float | None = None
        self.steps = 0
        self.elapsed = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == WARMUP_STEPS:
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.started is not None:
            self.steps += 1
            self.elapsed = time.perf_counter() - self.started


def train_images_per_second(batch_size: int, steps: int, accelerator: str = "cpu") -> float:
    torch.manual_seed(0)
    model = AutoEncoder(
        encoder=EncoderConv64(x_shape=(1, 64, 64), z_size=10, z_multiplier=2),  # mean and log-variance
        decoder=DecoderConv64(x_shape=(1, 64, 64), z_size=10),
    )
    cfg = BetaVae.cfg(optimizer="adam", optimizer_kwargs={"lr": 5e-4}, recon_loss="bce", loss_reduction="mean_sum", beta=1.0)
    framework = BetaVae(model=model, cfg=cfg)
    loader = torch.utils.data.DataLoader(Batches(batch_size, WARMUP_STEPS + steps), batch_size=None, shuffle=False, num_workers=0)
    timer = StepTimer()
    trainer = pl.Trainer(
        max_steps=WARMUP_STEPS + steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator=accelerator, devices=1, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(framework, loader)
    return timer.steps * batch_size / timer.elapsed


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="timed steps after the warm-up")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--accelerator", default="cpu", help="Lightning's accelerator: cpu, or cuda for the GPU section of make bench")
    args = parser.parse_args(argv)
    torch.set_num_threads(len(os.sched_getaffinity(0)))  # as vaelab's num_threads=auto for a single run
    warnings.filterwarnings("ignore", ".*does not have many workers.*")  # num_workers=0 is deliberate
    figures = []
    for batch_size in args.batch_sizes:
        rate = train_images_per_second(batch_size, args.steps, args.accelerator)
        figures.append({"name": f"disent_train_images_per_s_batch{batch_size}", "value": round(rate, 4), "unit": "images/s"})
    for figure in figures:
        print(f"{figure['name']:<40} {figure['value']:>10} {figure['unit']}")
    for figure in figures:
        print(json.dumps(figure))
    return figures


if __name__ == "__main__":
    main()
