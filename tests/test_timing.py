"""Stage clocks: phases nest without double counting, add up to the wall time, and cost nothing unopened."""

from __future__ import annotations

import time

import pytest

from pipeline.timing import StageClock, phase, time_line


def test_inner_phases_are_not_counted_in_the_outer_one_and_the_rest_is_other() -> None:
    clock = StageClock()
    with clock.measuring():
        with phase("infer"):
            time.sleep(0.02)
            with phase("tokenise"):
                time.sleep(0.03)
        with phase("tokenise"):
            time.sleep(0.01)
        time.sleep(0.02)
    times = clock.report()
    assert times["tokenise"] == pytest.approx(0.04, abs=0.02)
    assert times["infer"] == pytest.approx(0.02, abs=0.02)  # its inner tokenising is not in it
    assert times["other"] == pytest.approx(0.02, abs=0.02)
    assert sum(v for k, v in times.items() if k != "total") == pytest.approx(times["total"], abs=0.005)
    line = time_line("label", times, 100)
    assert line.startswith("label: 100 sentences in ") and "tokenise" in line and "other" in line


def test_a_phase_without_an_open_clock_records_nothing() -> None:
    clock = StageClock()
    with phase("infer"):
        pass
    assert clock.seconds == {}
