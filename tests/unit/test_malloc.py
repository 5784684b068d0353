"""daemon/malloc.py: one C heap arena, free pages handed back (glibc)."""

from __future__ import annotations

import subprocess
import sys

from dashpay.daemon import malloc


def test_an_operators_malloc_arena_max_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert malloc.one_arena() is False


def test_one_arena_holds_for_threads_started_after_it():
    """In a fresh interpreter (the call must come before a second thread allocates):
    with one arena, threads that allocate at once map no arena of their own."""
    code = """
import threading
from dashpay.daemon import malloc
assert malloc.one_arena()
def work():
    blocks = [bytearray(200_000) for _ in range(20)]
    barrier.wait()
barrier = threading.Barrier(4)
threads = [threading.Thread(target=work) for _ in range(3)]
for t in threads: t.start()
barrier.wait()
for t in threads: t.join()
maps = open("/proc/self/maps").read()
# A glibc thread arena is a 64 MiB-aligned heap mapping: none may exist.
heaps = [l for l in maps.splitlines() if l.split()[-1] not in ("[heap]", "[stack]")
         and int(l.split("-")[0], 16) % (64 << 20) == 0 and "rw-p" in l]
print(len(heaps))
"""
    env = {"PATH": "/usr/bin:/bin"}
    one = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() == "0"


def test_trim_gives_free_pages_back():
    blocks = [bytearray(100_000) for _ in range(50)]  # below the mmap threshold: heap
    del blocks[:-1]
    assert malloc.trim_free_memory() is True
