"""The machine a bench ran on, in one line: every bench prints it beside its ratios, so a figure can be read
against the CPU that produced it (the ratios themselves are measured in the same run)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from pipeline.models.agreement import cpu_flags


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_line() -> str:
    """CPU model, core count and the SIMD extensions that decide kernel choice (AVX2, AVX-512, AMX, VNNI)."""
    flags = " ".join(cpu_flags()) or "none of avx2/avx512/amx/avx_vnni"
    return f"{cpu_model()}, {os.cpu_count()} cores; CPU flags: {flags}"
