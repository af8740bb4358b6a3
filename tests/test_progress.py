"""The commands' one progress display (certsr_rt.cli.progress): plain lines off a terminal, a bar on one."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from certsr_rt.cli.progress import ProgressDisplay, ProgressState, clock, text_bar
from certsr_rt.cli.train import _train_display, _train_progress


def test_clock_and_text_bar() -> None:
    assert [clock(s) for s in (0, 59.4, 61, 3599, 3600, 90061)] == [
        "0:00",
        "0:59",
        "1:01",
        "59:59",
        "1:00:00",
        "25:01:01",
    ]
    assert clock(-3) == "0:00"
    assert text_bar(0.5, 10) == "#####....." and text_bar(2.0, 4) == "####" and text_bar(0, 3) == "..."


def test_train_lines_every_n_iterations_and_the_last(capsys: pytest.CaptureFixture[str]) -> None:
    with _train_display(True, 2) as display:  # not a terminal under pytest: plain lines
        assert display.plain
        show = _train_progress(display)
        show(0, 4, {})  # the start: no line
        for done in (1, 2, 3, 4):
            show(done, 4, {"l_g": 0.5, "l_pix": 0.1, "l_d": 0.25})
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("] ")[1].split()[0] for line in lines] == ["2/4", "4/4"]
    assert lines[-1].startswith("[####################] 4/4 ") and lines[-1].endswith(" l_g 0.5 l_d 0.25")
    assert " it/s ETA 0:00 " in lines[-1]


def test_a_resumed_start_is_not_counted_in_the_rate() -> None:
    display = ProgressDisplay(console=Console(file=io.StringIO(), force_terminal=False), line_seconds=None)
    display.update(1000, 2000)  # a resumed run: 1000 iterations were done before
    display.update(1001, 2000)
    state = display.state()
    assert state.completed == 1001 and state.rate is not None
    assert state.rate < 1000 / max(state.elapsed, 1e-9)  # not 1001 steps in a few microseconds


def test_time_cadence_notes_and_the_final_line() -> None:
    out = io.StringIO()
    display = ProgressDisplay(
        "work",
        console=Console(file=out, force_terminal=False),
        line=lambda s: f"{s.description} {s.completed:g}",
        line_seconds=3600.0,
    )
    display.update(0, 5)
    display.update(1, 5)  # the first step: a line (nothing was printed yet)
    display.print("a note")  # counts as a line for the cadence
    display.update(2, 5)
    display.update(3, 5)
    display.update(5, 5)  # complete: always a line
    display.update(5, 5)  # no change: no second one
    assert out.getvalue().splitlines() == ["work 1", "a note", "work 5"]


def test_disabled_shows_nothing() -> None:
    out = io.StringIO()
    display = ProgressDisplay(enabled=False, console=Console(file=out, force_terminal=True))
    display.update(1, 2, description="x", status="y")
    display.print("note")
    display.close()
    assert out.getvalue() == "" and not display.plain


def test_on_a_terminal_a_bar_with_description_count_and_status() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with ProgressDisplay("evaluating", console=console) as display:
        assert display.terminal and not display.plain
        display.update(3, 8, description="tiny-srvgg clean", status="l_g 0.5")
        display.print("a note above the bar")
    text = out.getvalue()
    assert "tiny-srvgg clean" in text and "3/8" in text and "l_g 0.5" in text
    assert "a note above the bar" in text


def test_state_without_a_total() -> None:
    s = ProgressState("frames", 7, None, 2.0, 3.5, "")
    assert s.fraction is None and s.remaining is None and not s.done
    assert ProgressState("x", 3, 4, 1.0, 2.0, "").remaining == 0.5


def test_no_end_line_where_the_command_says_it_itself() -> None:
    out = io.StringIO()
    display = ProgressDisplay(
        console=Console(file=out, force_terminal=False),
        line=lambda s: f"{s.completed:g}",
        line_seconds=3600.0,
        line_at_end=False,
    )
    display.print("start")
    for done in range(4):
        display.update(done, 3)
    assert out.getvalue().splitlines() == ["start"]
