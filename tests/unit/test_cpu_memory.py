"""`runtime.reuse_cpu_memory`: a large tensor freed and allocated again is not faulted in again."""

import platform
import resource
import sys

import pytest
import torch

from yingshe.runtime import reuse_cpu_memory

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt"
)


def faults_per_round(rounds: int = 5, mb: int = 64) -> float:
    """Minor page faults per allocate-write-free round of a `mb` MB tensor (after one warm round)."""
    torch.empty(mb << 18).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        torch.empty(mb << 18).fill_(1.0)  # 4-byte floats: mb MB
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / rounds


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
