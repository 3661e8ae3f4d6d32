"""`runtime.reuse_cpu_memory`: a large tensor freed and allocated again is not faulted in again."""

import platform
import resource
import statistics
import sys

import pytest
import torch

from yingshe.runtime import reuse_cpu_memory

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt"
)


def faults_per_round(rounds: int = 5, mb: int = 64) -> float:
    """Minor page faults of an allocate-write-free round of a `mb` MB tensor, the median of
    `rounds` after one warm round (the steady state of a training step; a round may still grow
    the heap once where earlier allocations left it fragmented)."""
    torch.empty(mb << 18).fill_(1.0)
    faults = []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(mb << 18).fill_(1.0)  # 4-byte floats: mb MB
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return statistics.median(faults)


def test_freed_memory_is_reused_warm_and_the_default_comes_back():
    try:
        assert reuse_cpu_memory(False)
        mapped = faults_per_round()  # glibc maps a 64 MB block afresh each time by default
        assert reuse_cpu_memory(True)
        kept = faults_per_round()
        assert mapped >= 16 and kept < mapped / 10, f"{kept} faults a round kept, {mapped} mapped"
        assert reuse_cpu_memory(False)
        assert faults_per_round() > 5 * max(kept, 1), "the default should map afresh again"
    finally:
        reuse_cpu_memory(False)
