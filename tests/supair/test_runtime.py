"""supair.runtime: the allocator setting that keeps freed memory mapped."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
from supair.runtime import keep_freed_memory

# A loop that allocates, writes and frees the same 40 MB tensor, as a training step does with its
# temporaries (glibc maps blocks above 32 MB afresh each time, whatever it has learned; smaller ones
# when its adaptive threshold has not risen to their size, or after trimming); prints the minor page
# faults the loop took.
_LOOP = """
import resource, sys, torch
from supair.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
for _ in range(10):  # the heap settles within a few rounds (how many depends on what was imported)
    torch.ones(10_000_000).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(10_000_000).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_freed_blocks_are_reused_without_page_faults():
    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _LOOP, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.split()[-1])

    default, kept = faults("default"), faults("keep")
    assert default > 20 * 5000  # each block mapped afresh: ~10000 pages a time
    assert kept < 200


def test_rejects_sizes_mallopt_cannot_take():
    for bad in (0, -1, 2**31):
        with pytest.raises(ValueError, match="max_block_bytes"):
            keep_freed_memory(bad)
