"""zoo.allocator: freed memory stays in the process (no page faults to get it back), unless the
allocator is the user's to set."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

import zoo
from zoo import allocator, training

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A 30 MiB block: glibc's default serves it with mmap and unmaps it when freed (the next one is page-
# faulted in anew); with the memory retained it comes from the heap (below the program break), and
# freeing it leaves the heap as large as it was.
BLOCK = """
import ctypes, sys, torch
from zoo import allocator, training
if sys.argv[1] == "retain":
    assert allocator.retain_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.sbrk.restype, libc.sbrk.argtypes = ctypes.c_void_p, ctypes.c_void_p, [ctypes.c_long]
block = libc.malloc(30 * 2**20)
brk = libc.sbrk(0)
libc.free(ctypes.c_void_p(block))
print(block < brk, libc.sbrk(0) == brk)
"""


def block_placement(mode: str) -> tuple[bool, bool]:
    """(whether the block came from the heap, whether the heap kept its size after the block was freed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("LD_PRELOAD",
                                                                                           "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", BLOCK, mode], capture_output=True, text=True, env=env, check=True)
    on_heap, kept = out.stdout.split()
    return on_heap == "True", kept == "True"


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
def test_freed_memory_stays_in_the_heap() -> None:
    assert block_placement("default")[0] is False, "glibc's default should map a 30 MiB block of its own"
    assert block_placement("retain") == (True, True)


@pytest.mark.parametrize("env", [{"MALLOC_TRIM_THRESHOLD_": "131072"}, {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}])
def test_an_allocator_the_user_chose_is_left_alone(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert allocator.user_chose_allocator() is not None
    assert allocator.retain_freed_memory() is False


@pytest.mark.parametrize("retain", [True, False])
def test_trainer_retains_cpu_memory_unless_told_not_to(monkeypatch: pytest.MonkeyPatch, retain: bool) -> None:
    calls = []
    monkeypatch.setattr(training, "retain_freed_memory", lambda: calls.append("retain") or True)
    monkeypatch.setattr(training, "release_free_memory", lambda: calls.append("release"))
    v = zoo.get_variant("vae")
    model = zoo.create("vae", v.tiny_config())
    x = torch.rand(16, *model.config.input_shape, generator=torch.Generator().manual_seed(0))
    zoo.train(model, x, epochs=1, batch_size=8, progress=False, device="cpu", retain_cpu_memory=retain)
    assert calls == (["retain", "release"] if retain else [])
