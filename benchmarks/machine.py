"""The machine a benchmark's figures were measured on, and the limit they are stated against.

Every speed depends on the CPU: benchmarks print :func:`machine_description` beside their
figures and state speeds as a ratio to :func:`matmul_gflops` measured in the same run.
The scripts beside it import it as ``benchmarks.machine`` (run them from the repository
root with ``PYTHONPATH=.``, as `make bench` does).
"""

from __future__ import annotations

import json
from pathlib import Path

from vaelab.system import available_cores


def matmul_gflops(size: int = 2048, repeats: int = 20) -> float:
    """This machine's fp32 matrix-multiply rate now (GFLOP/s, a size x size matmul on the
    threads torch uses): the limit benchmarks state their speeds against."""
    import time

    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


VECTOR_EXTENSIONS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "neon", "asimd", "sve")


def machine_description() -> dict:
    """The CPU a figure was measured on: model name, cores this process may use, the vector
    extensions that decide which kernels run (AVX2, AVX-512, AMX, ...) and whether bfloat16 is
    native. Benchmarks print it beside their figures."""
    import platform

    from vaelab.device import native_bf16_cpu

    model, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags.update(value.split())
    except OSError:  # not Linux: the platform module's name only
        pass
    return {
        "cpu_model": model or platform.processor() or platform.machine(),
        "cores": available_cores(),
        "vector_extensions": [ext for ext in VECTOR_EXTENSIONS if ext in flags],
        "native_bf16": native_bf16_cpu(),
    }


def print_figures(figures: list[dict], name_width: int = 36) -> None:
    """The figures as a table for people, then as JSON lines (what `make bench` collects). A
    figure whose value is a record (the machine's description) goes to the JSON lines alone."""
    for figure in figures:
        if not isinstance(figure["value"], dict):
            print(f"{figure['name']:<{name_width}} {figure['value']!s:>10} {figure['unit']}")
    for figure in figures:
        print(json.dumps(figure))

