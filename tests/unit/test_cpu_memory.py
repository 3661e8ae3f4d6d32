"""`runtime.reuse_cpu_memory`: a large tensor freed and allocated again is not faulted in again.

Measured in a fresh process: how a heap that earlier tests grew and fragmented serves the next
allocation depends on their history, not on the setting."""

import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt"
)

PROBE = """
import json, resource, statistics, sys
import torch
from yingshe.runtime import reuse_cpu_memory

def faults_per_round(rounds=5, mb=64):
    for _ in range(rounds):  # warm rounds: glibc's first blocks split around the alignment
        torch.empty(mb << 18).fill_(1.0)
    faults = []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(mb << 18).fill_(1.0)  # 4-byte floats: mb MB
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return statistics.median(faults)

applied = reuse_cpu_memory(sys.argv[1] == "keep")
print(json.dumps({"applied": applied, "faults": faults_per_round()}))
"""


def probe(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_freed_memory_is_reused_warm_instead_of_mapped_afresh():
    mapped, kept = probe("default"), probe("keep")
    assert kept["applied"]
    assert mapped["faults"] >= 16, "glibc maps a 64 MB block afresh each time by default"
    assert kept["faults"] < mapped["faults"] / 10, (kept, mapped)
