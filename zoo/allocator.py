"""Keep freed memory in the process while training on the CPU, instead of giving it back every step.

A training step allocates its activations and gradients and frees them again at the end. With
glibc's malloc (Linux), big blocks come from ``mmap`` and go back to the OS when freed, and the top of
the heap is trimmed whenever more than ``M_TRIM_THRESHOLD`` is free there; either way, the next step
takes page faults to get the same memory back, and the kernel zeroes every page. For the 64x64 conv
VAE at batch 64 that was about 30,000 minor page faults per step in a hand-written loop, against under
1,000 with the memory retained, and the zoo trained about 1.5x as fast as that loop on the benchmark
machine (``benchmarks/bench_paths.py``, docs/benchmarks.md). jemalloc and tcmalloc (through
``LD_PRELOAD``) avoid it by keeping freed memory; :func:`retain_freed_memory` does the same with
glibc's own switches (``mallopt``): blocks up to 32 MiB (glibc's largest mmap threshold) stay in the
heap, and the heap is not trimmed.

The settings hold for the rest of the process (glibc cannot go back to its adaptive thresholds), so
the process keeps its peak memory instead of returning it; the Trainer calls ``malloc_trim(0)`` at
the end of training to hand back what is free then. Where the user has chosen their allocator
(``MALLOC_*`` variables or a preloaded jemalloc/tcmalloc/mimalloc) or the C library is not glibc,
nothing is changed. ``TrainConfig(retain_cpu_memory=False)`` turns it off.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
from functools import cache

logger = logging.getLogger(__name__)

#: mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: glibc's upper limit for the mmap threshold on 64-bit systems (4 * 1024 * 1024 * sizeof(long)).
MMAP_THRESHOLD_MAX = 32 * 2**20
#: The trim threshold: a heap with less than this free at its top keeps it (an int, as mallopt takes).
TRIM_THRESHOLD = 2**31 - 1
_USER_CHOICES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                 "GLIBC_TUNABLES")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def user_chose_allocator() -> str | None:
    """Why the allocator is the user's to set (an environment variable or a preloaded allocator), or None."""
    for name in _USER_CHOICES:
        if name in os.environ and (name != "GLIBC_TUNABLES" or "glibc.malloc" in os.environ[name]):
            return f"{name} is set"
    preload = os.environ.get("LD_PRELOAD", "")
    for allocator in _OTHER_ALLOCATORS:
        if allocator in preload:
            return f"{allocator} is preloaded"
    return None


@cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def retain_freed_memory() -> bool:
    """Keep freed blocks of up to 32 MiB in the process and stop trimming the heap (glibc only).
    Returns whether the settings were applied (False where the allocator is the user's or not glibc)."""
    why = user_chose_allocator()
    libc = _glibc()
    if why is not None or libc is None:
        logger.debug("CPU allocator left as it is: %s", why or "not glibc")
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(libc.mallopt(M_TRIM_THRESHOLD,
                                                                                        TRIM_THRESHOLD))


def release_free_memory() -> None:
    """Give the heap's free memory back to the OS (``malloc_trim(0)``; glibc only)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
