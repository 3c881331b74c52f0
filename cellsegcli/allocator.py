"""Keep freed memory in the process for reuse (glibc's malloc), set once by the ``cellseg`` command.

Every tile's activations and every frame's probability and label images are allocated and freed again, tens
of megabytes each. By default glibc gives blocks that large back to the kernel as soon as they are freed
(``munmap``) and the next one of the same size page-faults in again: on a 2-core VM the network forward of
2568x1912 frames spent a third of its time in the kernel (9.4 million page faults for 6 frames). With
``mmap`` off and a high trim threshold the blocks stay in the heap and are reused: the bare forward of 1024
px tiles ran 1.46x faster (4.57 s against 6.66 s for 24 tiles, system time 0.03 s against 3.6 s) and
`cellseg segment` of 6 such frames 1.58x (17.7 s against 27.9 s), for 0.4 GB more peak memory (freed memory
is kept for the next frame, not returned). ``CELLSEG_MALLOC=default`` leaves glibc as it is; other C
libraries and systems are left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4   # glibc's malloc.h
_state = {"kept": False}


def keep_freed_memory() -> bool:
    """Tell glibc to serve large blocks from the heap and keep what is freed (up to 2 GB at the top);
    returns whether it did. Safe to call more than once."""
    if os.environ.get("CELLSEG_MALLOC", "keep") == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):   # glibc's parameters; another libc's mallopt differs
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(param, value) == 1 for param, value in
             ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 256 * 2**20)))
    _state["kept"] = _state["kept"] or ok
    return ok


def kept() -> bool:
    """Whether :func:`keep_freed_memory` took effect in this process (worker processes follow it)."""
    return _state["kept"]


def follow(parent_kept: bool) -> None:
    """A worker process's initializer: keep freed memory as its parent does."""
    if parent_kept:
        keep_freed_memory()
