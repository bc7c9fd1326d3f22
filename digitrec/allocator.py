"""Keep the memory a training loop frees for its next step, instead of giving it back to the system.

glibc's malloc hands every freed block above its mmap threshold (128 KB to start)
back to the kernel, and trims the heap above 128 KB of free space. A training
step frees its activations and gradients (a TinyVGG batch of 128: several 1-4 MB
tensors) and the next step asks for the same sizes again, so each step faulted
its pages in anew: 616,000 minor page faults in 210 TinyVGG steps, 26.4 ms a
step; with the thresholds below 110,000 faults and 17.9 ms a step (1 thread,
this machine, one run each after the other).

Only processes that train call it (a worker, ``digitrec train``, the
benchmark): they keep at most their peak, which they reach anyway. The page
process does not, so a server gives memory back when a session's models go.
Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt's parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to 32 MB (glibc's largest mmap threshold on 64-bit) come from the heap and are reused;
# up to 64 MB of freed heap stays in the process. A batch's largest tensor is well under both.
MMAP_THRESHOLD_BYTES = 32 * 2**20
TRIM_THRESHOLD_BYTES = 64 * 2**20


def keep_freed_memory() -> bool:
    """Set this process's malloc to reuse freed blocks; True if it took (glibc), False elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # no C library by that name, or no mallopt in it
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
