"""The study's progress bar: runs done of N and the time left, only on a terminal and never when quiet."""

from __future__ import annotations

import io

from lstmlab.run.progress import StudyProgress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_study_bar_counts_runs_and_member_steps():
    out = Terminal()
    with StudyProgress(runs=30, steps=600, done_runs=2, file=out) as progress:
        progress.steps(300)
        progress.runs_done(10)
        text = out.getvalue()
    assert "study: 2/30 runs" in text and "study: 12/30 runs" in text
    assert " 50%|" in text.split("study: 12/30 runs")[-1]
    assert "<" in text  # elapsed < remaining


def test_no_bar_when_quiet_or_not_a_terminal():
    for quiet, out in ((True, Terminal()), (False, io.StringIO())):
        with StudyProgress(runs=3, steps=10, quiet=quiet, file=out) as progress:
            progress.steps(5)
            progress.runs_done()
        assert out.getvalue() == ""
