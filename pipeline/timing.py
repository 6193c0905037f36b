"""Where a stage's time goes: named phases (read, segment, tokenise, infer, write) summed over a run.

A stage opens a clock (`StageClock.measuring()`); code deep inside it, such as a model's tokeniser, adds to
the open clock with `phase("tokenise")` without being handed it. Phases nest: time spent in an inner phase is
counted there and not in the outer one, so the phases add up to at most the stage's wall time (the rest is
`other`). With no clock open, `phase` costs one context-variable lookup.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

_OPEN: ContextVar[StageClock | None] = ContextVar("stage_clock", default=None)


@dataclass
class StageClock:
    """Seconds per phase, and the wall time of the whole stage once it is closed."""

    seconds: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    _stack: list[list[float]] = field(default_factory=list, repr=False)  # per open phase: time in inner phases

    @contextlib.contextmanager
    def measuring(self) -> Iterator[StageClock]:
        """Make this the clock `phase` adds to while the block runs; `wall` is the block's duration."""
        token = _OPEN.set(self)
        started = time.perf_counter()
        try:
            yield self
        finally:
            self.wall += time.perf_counter() - started
            _OPEN.reset(token)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def report(self) -> dict[str, float]:
        """Seconds per phase in first-seen order, `other` (wall minus the phases) and `total` (the wall time)."""
        out = {name: round(s, 3) for name, s in self.seconds.items()}
        out["other"] = round(max(0.0, self.wall - sum(self.seconds.values())), 3)
        out["total"] = round(self.wall, 3)
        return out


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the block's time (less any inner phase's) under `name` on the open clock, if one is open."""
    clock = _OPEN.get()
    if clock is None:
        yield
        return
    clock._stack.append([0.0])
    started = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - started
        inner = clock._stack.pop()[0]
        clock.add(name, elapsed - inner)
        if clock._stack:
            clock._stack[-1][0] += elapsed


def time_line(stage: str, times: dict[str, float], items: int, unit: str = "sentences") -> str:
    """One line for the end of a run: the rate and where the time went, e.g. for stderr."""
    total = times.get("total", 0.0)
    rate = f"{items / total:,.0f} {unit}/s" if total > 0 else "-"
    parts = ", ".join(
        f"{name} {seconds:.1f} s ({seconds / total:.0%})" if total > 0 else f"{name} {seconds:.1f} s"
        for name, seconds in times.items()
        if name != "total"
    )
    return f"{stage}: {items:,} {unit} in {total:.1f} s ({rate}): {parts}"
