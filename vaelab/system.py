"""Process-level settings for fast CPU training: malloc thresholds, thread counts, precision.

glibc's malloc returns large freed blocks to the kernel (munmap / trim) and faults
them back in on the next step. A training step allocates and frees the same large
activation buffers every time, so by default the kernel spends much of a step zeroing
and mapping pages (docs/performance.md, "Allocator", has the figures; the benchmark is
benchmarks/train_speed.py). The environment variables
MALLOC_MMAP_THRESHOLD_ etc. only act at process start; ``mallopt`` does the same
from inside the process, so users need not export anything.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger("vaelab")

# mallopt parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

_tuned = False


def tune_glibc_malloc(
    mmap_threshold: int = 1 << 30,  # serve blocks up to 1 GiB from the heap, not fresh mmaps
    trim_threshold: int = 1 << 30,  # keep up to 1 GiB of freed heap instead of returning it
    top_pad: int = 256 << 20,  # grow the heap in 256 MiB steps
) -> bool:
    """Apply the thresholds once per process; False where the C library is not glibc."""
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # musl and other C libraries: leave their allocator alone
    applied = all(
        mallopt(param, value) == 1
        for param, value in ((M_MMAP_THRESHOLD, mmap_threshold), (M_TRIM_THRESHOLD, trim_threshold), (M_TOP_PAD, top_pad))
    )
    _tuned = applied
    if not applied:
        log.debug("glibc mallopt refused the thresholds; the default allocator settings stay")
    return applied


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a SLURM allocation, taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def concurrent_processes(trainer_cfg) -> tuple[int, str]:
    """(processes sharing this machine's cores with this one, why): parallel sweep jobs
    times the DDP processes of one job on CPU. Without this, 2 joblib jobs of 2 DDP
    processes on 2 cores would run 8 threads where 2 fit."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    jobs, why = 1, []
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        launcher = HydraConfig.get().launcher
        target = str(launcher.get("_target_", ""))
        if target.endswith("JoblibLauncher"):
            n_jobs = int(launcher.get("n_jobs", -1))
            jobs = n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)  # joblib's rule
            why.append(f"{jobs} joblib jobs")
        elif target.endswith("submitit_launcher.LocalLauncher"):
            # submitit_local starts every job at once: each gets cpus_per_task cores (default 1).
            jobs = max(1, available_cores() // int(launcher.get("cpus_per_task") or 1))
            why.append("submitit_local cpus_per_task")
    from vaelab.device import training_device  # torch: imported only when a run starts

    strategy = str(trainer_cfg.get("strategy", "auto"))
    if strategy.startswith("ddp") and training_device(trainer_cfg).type == "cpu":
        devices = trainer_cfg.get("devices", 1)
        ranks = int(devices) if str(devices).isdigit() else 1
        jobs *= ranks
        why.append(f"{ranks} DDP processes")
    return jobs, " x ".join(why)


def set_num_threads(setting, trainer_cfg) -> int:
    """Torch and BLAS threads for this process: ``setting`` if an integer (at most the cores this
    process may use: more is clamped, with a warning); ``auto``: the cores available divided
    among the processes that share them (see above)."""
    import torch
    from threadpoolctl import threadpool_limits

    if setting == "auto" or setting is None:
        processes, why = concurrent_processes(trainer_cfg)
        threads = max(1, available_cores() // processes)
        if processes > 1:
            log.info("%d of %d cores for this process (%s)", threads, available_cores(), why)
    else:
        from vaelab.errors import check_int

        threads = check_int("num_threads", setting, minimum=1)
        cores = available_cores()
        if threads > cores:
            # More OpenMP threads than cores wait on each other at every parallel region:
            # num_threads=999 on 2 cores took over 300 s for 3 steps.
            log.warning("num_threads=%d: this process may use %d cores; using %d threads", threads, cores, cores)
            threads = cores
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)  # numpy/scipy/sklearn (the metrics) too
    return threads


def memory_bytes() -> int | None:
    """The RAM this process may use: the machine's, or its container's (cgroup) limit if lower.
    None where neither can be read."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not POSIX
        pass
    for cgroup_limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(cgroup_limit) as file:
                value = file.read().strip()
        except OSError:
            continue
        if value.isdigit() and int(value) < 2**60:  # "max" or a huge number: no limit
            limits.append(int(value))
    return min(limits) if limits else None


def format_bytes(count: float) -> str:
    """``count`` in binary units, two or three figures: 512 B, 1.5 TiB, 23 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.0f} {unit}" if count >= 10 or unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def training_memory(device) -> tuple[int, str] | None:
    """(bytes, where) that a batch must fit in: this machine's RAM (every batch is rendered there
    first), or the GPU's memory when ``device`` (a torch device, or ``cpu``) is a smaller GPU.
    None when unknown."""
    ram = memory_bytes()
    limit = (ram, "this machine has") if ram is not None else None
    if getattr(device, "type", device) == "cuda":
        import torch

        properties = torch.cuda.get_device_properties(device.index if device.index is not None else torch.cuda.current_device())
        if limit is None or properties.total_memory < limit[0]:
            limit = (properties.total_memory, f"the GPU ({properties.name}) has")
    return limit


def check_fits_in_memory(key: str, count: int, image_shape: tuple[int, ...], what: str, device) -> None:
    """A one-line UserError when ``count`` float32 images of ``image_shape`` (C, H, W) alone exceed
    the memory they must fit in: Torch's allocator would fail later with a long message, or the
    kernel kill the process. Only a batch that clearly cannot fit is refused (the model's
    activations, several times larger, are not counted)."""
    channels, height, width = image_shape
    needed = count * channels * height * width * 4  # float32
    check_bytes_fit(f"{key}={count}", f"{what} of {height}x{width}x{channels} float32 images", needed, device)


def check_bytes_fit(setting: str, what: str, needed: int, device) -> None:
    """``<setting>: <what> needs <needed>; this machine has <memory>`` as a one-line UserError when
    ``needed`` bytes exceed the memory they must fit in (:func:`training_memory`; ``device``
    ``cpu`` for what is held in RAM whatever the model trains on)."""
    limit = training_memory(device)
    if limit is not None and needed > limit[0]:
        from vaelab.errors import UserError

        raise UserError(f"{setting}: {what} needs {format_bytes(needed)}; {limit[1]} {format_bytes(limit[0])}")
