"""Process-wide memory settings for espresso's long-running, allocation-heavy processes."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

__all__ = ["tune_process"]

_M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
MMAP_THRESHOLD = 128 * 1024


def tune_process() -> None:
    """Fewer GC passes and a fixed malloc mmap threshold.

    - The engine allocates a dict per event and a tuple per change, none in cycles; the
      default gen-0 threshold (700) made a replay spend ~10 % of its time in collections
      that found nothing. Objects alive at start-up are frozen out of every pass.
    - glibc raises its mmap threshold each time a large block is freed, after which the
      shards' growing columns are reallocated inside the heap and leave holes behind:
      ~25 % more resident memory per contact on the benchmark. A fixed threshold keeps
      large blocks in their own mappings (grown by mremap, returned when freed).
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        ctypes.CDLL(name).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass  # not glibc (e.g. musl): its allocator has no such setting
