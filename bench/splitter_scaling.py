"""Cleaning + sentence splitting throughput, and how it scales with the text's length (a quadratic guard).

    PYTHONPATH=$PWD .venv/bin/python bench/splitter_scaling.py

Prints MB/s (UTF-8 bytes of raw text per second, one core) on 1 MB and on 4 MB of repeated answer-like text,
and their ratio: about 1.0 when the work is linear in the text, well under 1 when something is quadratic.
Both figures are measured in the same run, so the ratio does not depend on the machine.
"""

from __future__ import annotations

import platform
import time

from pipeline.segment.clean import clean_text
from pipeline.segment.splitter import split_sentences

UNIT = (
    "Regeringen föreslår bl.a. att anslaget ökar med 100 mnkr fr.o.m. 2026, se prop. 2024/25:1. "
    "– Vi måste agera nu, säger ministern. Det gäller Polisen, Tullen m.fl. Myndigheter ska samverka.\n\n"
    "* en punkt i en lista\n## En rubrik\n"
)


def throughput(copies: int, repeats: int = 3) -> float:
    """Best of `repeats` MB/s for `copies` repetitions of the unit text."""
    text = UNIT * copies
    size = len(text.encode())
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        spans = split_sentences(clean_text(text))
        best = min(best, time.perf_counter() - began)
        assert len(spans) == 6 * copies
    return size / best / 1e6


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        flags = []
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return " ".join(f for f in wanted if f in flags) or "none of " + ", ".join(wanted)


def main() -> None:
    small, large = throughput(5_000), throughput(20_000)
    print(f"{platform.processor() or platform.machine()}; CPU flags: {cpu_flags()}")
    print(f"1 MB: {small:.1f} MB/s; 4 MB: {large:.1f} MB/s; ratio 4 MB / 1 MB: {large / small:.2f} (linear: ~1.0)")


if __name__ == "__main__":
    main()
