"""Keep freed memory in the process during CPU training (recipe key `keep_freed_memory`, on by
default), so each step reuses the pages of the last one instead of faulting in fresh ones.

glibc's malloc serves a large block (above its mmap threshold: 128 KB at start, adapting up to
32 MB) with freshly mapped pages and unmaps it on free, and returns the top of its heap to the
system beyond a trim threshold. A training step allocates and frees the same activations, logits
and gradients every step, hundreds of MB, so on the CPU each of them is faulted in and zeroed by
the kernel again every step, and the ops that first touch them run several times slower than their
arithmetic: on the AMD EPYC of bench/README.md a cross-entropy over (2048 x 32000) logits took
378 ms forward and backward, 75 ms with this set, and a 110M-parameter bf16 step 35% less time.
Raising both thresholds makes malloc take those blocks from its heap and keep freed pages for the
next step (what preloading jemalloc or tcmalloc does for PyTorch CPU training, without the preload).

The cost: the heap keeps its peak size. glibc can also strand a freed block that a later aligned
request of the same size does not quite fit (PyTorch asks for 64-byte alignment), so a loop that
frees and reallocates one isolated large block can grow; training steps free neighbouring blocks
that coalesce, and the heap settles after a few steps (110m bf16: peak RSS +7%, flat from step 4
on). `release_free_memory` hands every free page back (malloc_trim), which the loop does after
each checkpoint save, so nothing stranded outlives a save interval.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
KEEP_BELOW = 1 << 30  # blocks up to 1 GiB come from the heap; a larger one is rare enough to map


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    if not all(hasattr(libc, f) for f in ("gnu_get_libc_version", "mallopt", "malloc_trim")):
        return None
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return libc


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve blocks below `KEEP_BELOW` from its heap and not to trim it.
    True where it took effect; False where the C library is not glibc (nothing to do there)."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_BELOW)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, KEEP_BELOW))


def release_free_memory() -> None:
    """Give every free page of malloc's heap back to the system (the address space stays)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
