"""`keep_freed_memory` (train/cpu_allocator.py): after it, a large block PyTorch frees stays with the
process for the next step instead of going back to the system; `release_free_memory` gives it back."""

from __future__ import annotations

import os
import platform

import pytest
import torch

from llama2.train.cpu_allocator import keep_freed_memory, release_free_memory

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt and malloc_trim are glibc's")

BLOCK = 256 * 2**20  # above glibc's largest default mmap threshold (32 MB): unmapped on free by default


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_freed_block_stays_resident_until_released():
    assert keep_freed_memory()
    block = torch.ones(BLOCK // 4)  # every page touched
    touched = resident_bytes()
    del block
    assert resident_bytes() > touched - BLOCK // 2  # by default the whole block is unmapped here
    release_free_memory()
    assert resident_bytes() < touched - BLOCK // 2
