"""Cleaning + sentence splitting throughput, and how it scales with the text's length (a quadratic guard).

    PYTHONPATH=$PWD .venv/bin/python bench/splitter_scaling.py

Prints MB/s (UTF-8 bytes of raw text per second, one core) on 1 MB and on 4 MB of repeated answer-like text,
and their ratio: about 1.0 when the work is linear in the text, well under 1 when something is quadratic.
Both figures are measured in the same run, so the ratio does not depend on the machine.
"""

from __future__ import annotations

import time

from machine import machine_line  # bench/machine.py, beside this script

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


def main() -> None:
    small, large = throughput(5_000), throughput(20_000)
    print(machine_line())
    print(f"1 MB: {small:.1f} MB/s; 4 MB: {large:.1f} MB/s; ratio 4 MB / 1 MB: {large / small:.2f} (linear: ~1.0)")


if __name__ == "__main__":
    main()
