"""What this machine has: its CPU (read once from /proc/cpuinfo), usable cores and available memory.

On Linux; elsewhere the CPU is unknown (no native bf16 assumed) and memory unknown (None).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

# Native bf16 arithmetic: AVX512-BF16 (Intel Cooper Lake+, AMD Zen 4+) or AMX-BF16 (Intel Sapphire Rapids+).
# Without them torch emulates bf16 matmuls in fp32, which is slower than fp32 itself.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor is enough: every core of a machine has the same flags
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_model() -> str:
    return _cpuinfo().get("model name", "")


def cpu_native_bf16() -> bool:
    """Whether the CPU computes bf16 natively (then CPU runs default to bf16 autocast: docs/benchmarks.md)."""
    flags = set(_cpuinfo().get("flags", "").split())
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def usable_cpus() -> int:
    """Cores this process may run on (its affinity mask where the OS has one, e.g. under taskset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is none, e.g. macOS)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
