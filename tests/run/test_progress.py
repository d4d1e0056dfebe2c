"""Progress: a live bar on a terminal, periodic plain log lines elsewhere (cron)."""

from __future__ import annotations

import io
import logging

from batchgen.outcome import Tally
from batchgen.run.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_bar_with_done_failed_rate_and_tokens():
    screen = Terminal()
    progress = Progress(4, stream=screen)
    progress.update(Tally(succeeded=2, failed_final=1, tokens_used=252000))
    progress.close(Tally(succeeded=3, failed_final=1, tokens_used=378000))
    text = screen.getvalue()
    assert "4/4" in text and "done=3" in text and "failed=1" in text and "tokens=378000" in text


def test_off_a_terminal_progress_is_plain_log_lines(caplog):
    log_file = io.StringIO()
    progress = Progress(10, stream=log_file, interval=0.0)
    with caplog.at_level(logging.INFO, logger="batchgen.progress"):
        progress.update(Tally(succeeded=1))
        progress.close(Tally(succeeded=10))
    assert log_file.getvalue() == ""  # no bar characters in a cron log
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("progress 1/10: done=1") and messages[-1].startswith(
        "finished 10/10: done=10"
    )


def test_log_lines_carry_an_eta_from_the_runs_own_pace(caplog):
    progress = Progress(10, stream=io.StringIO(), interval=0.0)
    with caplog.at_level(logging.INFO, logger="batchgen.progress"):
        progress.update(Tally(succeeded=2, already_done=3))
    assert "progress 5/10" in caplog.text and "eta=" in caplog.text
