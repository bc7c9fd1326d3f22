"""How a process's malloc keeps or returns freed memory: a training loop keeps what it frees for its
next step (``keep_freed_memory``); the page process gives large freed blocks back (``return_large_blocks``).

glibc's malloc hands every freed block above its mmap threshold (128 KB to start)
back to the kernel, and trims the heap above 128 KB of free space. A training
step frees its activations and gradients (a TinyVGG batch of 128: several 1-4 MB
tensors) and the next step asks for the same sizes again, so each step faulted
its pages in anew: 616,000 minor page faults in 210 TinyVGG steps, 26.4 ms a
step; with the thresholds below 110,000 faults and 17.9 ms a step (1 thread,
this machine, one run each after the other).

Only processes that train call ``keep_freed_memory`` (a worker, ``digitrec train``, the
benchmark): they keep at most their peak, which they reach anyway.

The page process does the opposite (``return_large_blocks``), so a server gives
memory back when a session's models go. Left to itself, glibc raises its mmap
threshold to the largest block freed so far (up to 32 MB): once one 23 MB
upload had been freed, the next learner's upload, model and weights came from
the heap, and stayed in the process when freed. A server whose learners each
uploaded a 23 MB checkpoint, trained and left stood 888, 890, 913 and 939 MB
after each had gone (855 MB before them); with the threshold fixed at 16 MB,
863, 865, 874 and 869 MB (``tests/load/test_session_end.py``). Not lower: at
1 MB the page's own passes over the test set, whose batches of maps are just
under 16 MB, were mapped and faulted in anew each batch (TinyVGG's predictions
for 10,000 digits 0.78-0.93 s instead of 0.65).
Elsewhere than glibc (macOS, musl) both do nothing.
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


# The page process: every block over 16 MB (an upload, a large layer's weights) is mapped on its own and
# unmapped when freed; smaller ones come from the heap and are reused. Setting it also stops glibc moving it.
RETURN_THRESHOLD_BYTES = 16 * 2**20


def keep_freed_memory() -> bool:
    """Set this process's malloc to reuse freed blocks; True if it took (glibc), False elsewhere."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def return_large_blocks() -> bool:
    """Set this process's malloc to give every block over 16 MB back to the system when it is freed (the
    page process: see above); True if it took (glibc), False elsewhere."""
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, RETURN_THRESHOLD_BYTES))


def _mallopt():
    """glibc's ``mallopt``, or None where there is none."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):  # no C library by that name, or no mallopt in it
        return None
