"""The C allocator's settings for a long-running server process (glibc only).

glibc serves an allocation above its mmap threshold (128 KiB at first) with a mapping of
its own, returned to the system when freed. But freeing such a mapping raises the
threshold to that size (up to 32 MiB), so from then on the big buffers of a burst of
requests (database results, /sync bodies) are carved from the heap, and what they leave
there when freed stays resident: the heap cannot shrink past a chunk still in use above
them. A fixed threshold keeps big buffers in mappings of their own. Measured with the
client load (docs/performance.md, "Memory"): 4-6 MiB less resident after the run on
PostgreSQL, about 2 MiB on SQLite, throughput unchanged.

Setting ``MALLOC_MMAP_THRESHOLD_`` (or glibc tunables) in the environment overrides this.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

#: mallopt's parameter number for the mmap threshold (glibc's malloc.h).
_M_MMAP_THRESHOLD = -3
#: glibc's own initial threshold, kept fixed instead of rising.
MMAP_THRESHOLD = 128 * 1024


def tune_malloc(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes; False (nothing changed) with
    another C library or when the environment already sets it."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "glibc.malloc.mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # mallopt's parameters are glibc's
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = mallopt(_M_MMAP_THRESHOLD, threshold) == 1
    if not done:
        log.debug("mallopt(M_MMAP_THRESHOLD, %d) refused", threshold)
    return done
