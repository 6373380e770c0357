"""Process-level settings for fast CPU training.

glibc's malloc returns large freed blocks to the kernel (munmap / trim) and faults
them back in on the next step. A training step allocates and frees the same large
activation buffers every time, so by default the kernel spends more time zeroing
and mapping pages than the model spends computing: at batch 256 the standard
architecture trains at about 900 images/s on 2 cores, and at about 1,750 with the
thresholds below (benchmarks/train_speed.py). The environment variables
MALLOC_MMAP_THRESHOLD_ etc. only act at process start; ``mallopt`` does the same
from inside the process, so users need not export anything.
"""

from __future__ import annotations

import ctypes
import logging
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
