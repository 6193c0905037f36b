"""Stage clocks: phases nest without double counting, add up to the wall time, and cost nothing unopened."""

from __future__ import annotations

import pytest

from pipeline import timing
from pipeline.timing import StageClock, phase, time_line


class FakeClock:
    """`time.perf_counter` that moves only when the test sleeps: exact sums on a loaded machine too."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_inner_phases_are_not_counted_in_the_outer_one_and_the_rest_is_other(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", fake.perf_counter)
    clock = StageClock()
    with clock.measuring():
        with phase("infer"):
            fake.sleep(0.02)
            with phase("tokenise"):
                fake.sleep(0.03)
        with phase("tokenise"):
            fake.sleep(0.01)
        fake.sleep(0.02)
    times = clock.report()
    assert times == pytest.approx({"infer": 0.02, "tokenise": 0.04, "other": 0.02, "total": 0.08})
    line = time_line("label", times, 100)
    assert line.startswith("label: 100 sentences in ") and "tokenise" in line and "other" in line


def test_a_phase_without_an_open_clock_records_nothing() -> None:
    clock = StageClock()
    with phase("infer"):
        pass
    assert clock.seconds == {}
