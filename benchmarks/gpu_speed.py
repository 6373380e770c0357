"""The GPU section of `make bench`: training through the real loop and the full metric suite on CUDA.

    PYTHONPATH=. python benchmarks/gpu_speed.py [--steps 300] [--batch-sizes 64 256] [--repeats 3]

Without a CUDA GPU it says so in one line and measures nothing. On one (``cuda:0``):

- the GPU's name, compute capability and memory, and whether it computes bfloat16 natively;
- for each batch size, `vaelab.train.train` on the GPU (standard conv architecture,
  dSprites rendered on the GPU, Bernoulli β-VAE, fp32, logger=none, metrics, information and
  validation off), steps timed after a warm-up of 20: steps/s and images/s, eager and compiled
  (``trainer.compile=true``) taking turns, medians over repeats, with the compile time (the
  compiled run's first step less the eager one's), and ``bf16-mixed`` eager where it is native;
- the full metric suite end to end: `vaelab eval` of a checkpoint trained here for 100 steps,
  ``device=cuda``, in a fresh process (wall time, interpreter start included);
- disent's β-VAE on the same GPU (benchmarks/framework_speed.py ``--accelerator cuda``) beside
  the eager batch sizes when ``disent`` is importable in this Python; otherwise one line saying so.
Targets (issue 30): >= 500 steps/s at batch 64, >= 3x disent, full suite <= 20 s.
Prints one human line and one JSON line per figure: {"name", "value", "unit"}.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ON_GPU = ("trainer.accelerator=cuda",)


def gpu_description() -> dict:
    import torch

    from vaelab.device import native_bf16

    device = torch.device("cuda", 0)
    properties = torch.cuda.get_device_properties(device)
    return {
        "gpu": properties.name,
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(device))),
        "memory_gib": round(properties.total_memory / 2**30, 1),
        "native_bf16": native_bf16(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


def full_suite_seconds(run_dir: Path) -> float:
    """`vaelab eval` with the full suite on the GPU, of a checkpoint trained here: wall seconds."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env_args = {"capture_output": True, "text": True, "cwd": run_dir, "env": env}
    train = [sys.executable, "-m", "vaelab", "train", *ON_GPU, "trainer.max_steps=100", "logger=none", "metrics=none",
             "metrics@periodic_metrics=none", "information.num_samples=0", "images.num_images=0", f"hydra.run.dir={run_dir / 'train'}"]  # fmt: skip
    trained = subprocess.run(train, **env_args)
    if trained.returncode != 0:
        raise SystemExit(f"training for the suite failed: {trained.stderr.strip().splitlines()[-1]}")
    evaluate = [sys.executable, "-m", "vaelab", "eval", f"ckpt={run_dir / 'train' / 'checkpoints' / 'last.ckpt'}", "device=cuda",
                "metrics=full", "logger=none", "images.num_images=0", f"hydra.run.dir={run_dir / 'eval'}"]  # fmt: skip
    started = time.perf_counter()
    evaluated = subprocess.run(evaluate, **env_args)
    seconds = time.perf_counter() - started
    if evaluated.returncode != 0:
        raise SystemExit(f"the full suite failed: {evaluated.stderr.strip().splitlines()[-1]}")
    return seconds


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps at batch 64; other batch sizes time as many images")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from benchmarks.machine import print_figures

    import torch

    figures = []

    def add(name: str, value, unit: str) -> None:
        figures.append({"name": name, "value": round(value, 4) if isinstance(value, float) else value, "unit": unit})

    if not torch.cuda.is_available():
        print("no CUDA GPU here (torch sees none): the GPU section measures nothing")
        add("gpu", None, "none")
    else:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import train_speed

        for key, value in gpu_description().items():
            add(f"gpu_{key}" if key != "gpu" else "gpu", value, "")
        overrides = ON_GPU
        for batch_size in args.batch_sizes:
            steps = max(50, args.steps * 64 // batch_size)
            eager, compiled, compile_seconds = [], [], []
            for _ in range(args.repeats):
                plain = train_speed.timed_run(batch_size, steps, overrides=overrides)
                fast = train_speed.timed_run(batch_size, steps, compile=True, overrides=overrides)
                eager.append(plain.images_per_second)
                compiled.append(fast.images_per_second)
                compile_seconds.append(fast.first_step_seconds - plain.first_step_seconds)
            for variant, rates in (("", eager), ("_compiled", compiled)):
                add(f"gpu_train_images_per_s_batch{batch_size}{variant}", statistics.median(rates), "images/s")
                add(f"gpu_train_steps_per_s_batch{batch_size}{variant}", statistics.median(rates) / batch_size, "steps/s")
            add(f"gpu_compile_seconds_batch{batch_size}", statistics.median(compile_seconds), "s")
            if gpu_description()["native_bf16"]:
                rate = statistics.median(train_speed.timed_run(batch_size, steps, "bf16-mixed", overrides=overrides).images_per_second
                                         for _ in range(args.repeats))  # fmt: skip
                add(f"gpu_train_images_per_s_batch{batch_size}_bf16", rate, "images/s")
            if importlib.util.find_spec("disent") is not None:
                disent = train_speed.disent_images_per_second(sys.executable, batch_size, steps, accelerator="cuda")
                add(f"gpu_disent_train_images_per_s_batch{batch_size}", disent, "images/s")
                add(f"gpu_speedup_over_disent_batch{batch_size}", statistics.median(eager) / disent, "ratio")
        if importlib.util.find_spec("disent") is None:
            print("disent is not importable in this Python: no comparison with it (benchmarks/framework_speed.py says how to install it)")
        with tempfile.TemporaryDirectory() as run_dir:
            add("gpu_full_suite_end_to_end_seconds", full_suite_seconds(Path(run_dir)), "s")
    print_figures(figures, name_width=44)
    return figures


if __name__ == "__main__":
    main()
