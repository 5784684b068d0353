"""The C allocator: one arena for the whole daemon, and free pages handed back.

glibc gives each thread that allocates while another holds the main arena an arena of
its own, and the pages it touched stay resident. The daemon runs its Python code on one
thread (the GIL serialises the rest) and does its database calls on a worker thread, so
a second arena buys nothing but ~1.2 MB of idle RSS (measured: 37.1 MB with two, 35.9
with one). ``one_arena`` is the in-process form of ``MALLOC_ARENA_MAX=1``; it must run
before a second thread allocates, i.e. before ``trio.run``. An operator's
``MALLOC_ARENA_MAX`` wins; on a C library without ``mallopt`` (musl) it does nothing.

glibc keeps freed memory inside its heap resident until the top of the heap is free;
``trim_free_memory`` (``malloc_trim``) gives the free pages within it back. The daemon
calls it when a rescan after connecting has finished: start-up (configuration, the
migrations, loading the pending table, the rescan's buffers) leaves ~0.8 MB of such
pages behind on an idle daemon, far more after a rescan of many receivers.
"""

from __future__ import annotations

import ctypes  # already loaded by trio, which the daemon has imported
import functools
import os

M_ARENA_MAX = -8  # glibc's malloc.h


def one_arena() -> bool:
    """Limit glibc's malloc to one arena; whether it was set here."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    mallopt = _libc_function("mallopt")
    return mallopt is not None and bool(mallopt(M_ARENA_MAX, 1))


def trim_free_memory() -> bool:
    """Give the C heap's free pages back to the system; whether glibc released any."""
    malloc_trim = _libc_function("malloc_trim")
    return malloc_trim is not None and bool(malloc_trim(0))


@functools.cache
def _libc_function(name: str) -> ctypes._CFuncPtr | None:
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):  # not glibc
        return None
