"""glibc's allocator tuned for work that allocates and frees large arrays over and over: an
embed's batches of model activations (:mod:`labelloop.embed.runner`), a refresh's and a drain's
(n, C) temporaries (:meth:`labelloop.Project.refresh`). Without it each such array is mapped,
zero-filled page by page and unmapped again (embedding: ~40 % of the CPU time was page faults;
a refresh at 1M items: 1.3 -> 0.6-0.8 system CPU-s).

Its own module, importing only ctypes, so that a refresh in a new process does not import the
embed stage (its thread pool, logging, queue) for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Callable, Iterator

__all__ = ["tune_allocator", "tuned_allocator"]

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
# glibc's defaults, restored afterwards: trim at 128 KiB, 64 Ki mappings at most
_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_TOP_PAD: 128 * 1024, _M_MMAP_MAX: 65536}
# tuned: never mmap (a batch of activations, up to ~100 MB each at 224 px, or a 40 MB (n, C)
# array at 1M items, would be mapped, zero-filled page by page and unmapped again every time),
# and keep up to 1 GiB of freed heap for the next one
_TUNED = {_M_TRIM_THRESHOLD: 1 << 30, _M_TOP_PAD: 64 << 20, _M_MMAP_MAX: 0}


def _libc():
    """glibc, or None (macOS, musl, Windows: their allocators are left alone)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import os

        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        return ctypes.CDLL("libc.so.6")
    except (OSError, ValueError, AttributeError):
        return None


def tune_allocator() -> Callable[[], None]:
    """Set glibc's allocator for large temporaries (no-op elsewhere); returns the function that
    restores its defaults and gives the kept heap back to the system."""
    libc = _libc()
    if libc is None:
        return lambda: None
    for param, value in _TUNED.items():
        libc.mallopt(param, value)

    def restore() -> None:
        for param, value in _DEFAULTS.items():
            libc.mallopt(param, value)
        libc.malloc_trim(0)

    return restore


@contextlib.contextmanager
def tuned_allocator() -> Iterator[None]:
    """:func:`tune_allocator` for the duration of a ``with`` block."""
    restore = tune_allocator()
    try:
        yield
    finally:
        restore()
