"""trainer.compile: the compiled training step against the eager one, step by step in one process.

    PYTHONPATH=. python benchmarks/compile_speed.py [--batch-sizes 64 256] [--pairs 40] [--device cpu] [-- overrides]

Builds the run's model, objective and optimiser from the train config (the standard conv
architecture on dSprites, β-VAE, fused Adam, unless overrides say otherwise) twice, with the
same weights: one module eager, one with ``compile_step`` (what ``trainer.compile=true``
sets). Times the compiled module's first step (torch.compile compiles it, caches off: a cold
compile, as on a fresh machine) against the eager one's, then ``--pairs`` steps of each,
alternating eager and compiled on the same batch, so that a drift in the machine's speed
hits both alike. A step is the module's forward pass, the objective, the backward pass and
the optimiser step. Prints one human line and one JSON line per figure: {"name", "value", "unit"}.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_module(cfg, dataset, compile_step: bool):
    import hydra.utils

    from vaelab import objectives
    from vaelab.module import VAEModule

    model = hydra.utils.instantiate(cfg.model, image_shape=tuple(dataset.image_shape), binary_data=dataset.binary)
    module = VAEModule(model, objectives.build(cfg, dataset_size=len(dataset)), hydra.utils.instantiate(cfg.optimizer),
                       compile_step=compile_step)  # fmt: skip
    return module


def step_seconds(module, optimizer, images, noise, device) -> float:
    import torch

    started = time.perf_counter()
    out, _ = module._forward(images, noise, None)
    module.objective(out, step=0)["loss"].backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def compare(batch_size: int, pairs: int, device_name: str, overrides: list[str]) -> dict[str, float]:
    import numpy as np
    import torch
    import torch._inductor.config

    import hydra.utils

    from tests.conftest import compose_train
    from vaelab.device import resolve_device

    torch._inductor.config.force_disable_caches = True  # a cold compile every time
    device = resolve_device(device_name)
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose_train([f"data.batch_size={batch_size}", *overrides], Path(run_dir))
    dataset = hydra.utils.instantiate(cfg.dataset)
    eager = build_module(cfg, dataset, compile_step=False).to(device).train()
    compiled = copy.deepcopy(eager)
    compiled.compile_step = True
    optimizers = {id(module): module.configure_optimizers() for module in (eager, compiled)}
    rng = np.random.default_rng(0)
    batches = [dataset.images_on(dataset.sample_factors(batch_size, rng), device) for _ in range(4)]
    noise = torch.randn(batch_size, eager.model.latent_dim, device=device)
    first = {name: step_seconds(module, optimizers[id(module)], batches[0], noise, device)
             for name, module in (("eager", eager), ("compiled", compiled))}  # fmt: skip
    times = {"eager": [], "compiled": []}
    for i in range(pairs):
        for name, module in (("eager", eager), ("compiled", compiled)):
            times[name].append(step_seconds(module, optimizers[id(module)], batches[i % 4], noise, device))
    eager_ms, compiled_ms = statistics.median(times["eager"]) * 1e3, statistics.median(times["compiled"]) * 1e3
    return {
        "eager_step_ms": eager_ms,
        "compiled_step_ms": compiled_ms,
        "eager_images_per_s": batch_size / eager_ms * 1e3,
        "compiled_images_per_s": batch_size / compiled_ms * 1e3,
        "compiled_speedup": statistics.median(e / c for e, c in zip(times["eager"], times["compiled"])),
        "compile_seconds": first["compiled"] - first["eager"],
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--pairs", type=int, default=40, help="eager and compiled steps timed, alternating")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N (vaelab/device.py)")
    parser.add_argument("overrides", nargs="*", help="train config overrides after --")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from benchmarks.machine import machine_description, print_figures
    from vaelab.system import set_num_threads, tune_glibc_malloc

    tune_glibc_malloc()
    set_num_threads("auto", {"strategy": "auto", "accelerator": "cpu"})
    figures = [{"name": "machine", "value": machine_description(), "unit": ""}]
    for batch_size in args.batch_sizes:
        for name, value in compare(batch_size, args.pairs, args.device, args.overrides).items():
            unit = "s" if name.endswith("seconds") else "ms" if name.endswith("_ms") else "ratio" if name.endswith("speedup") else "images/s"
            figures.append({"name": f"{name}_batch{batch_size}", "value": round(value, 4), "unit": unit})
    print_figures(figures)
    return figures


if __name__ == "__main__":
    main()
