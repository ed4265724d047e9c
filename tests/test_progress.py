"""The one progress bar: method name and ETA; few redraws when the log is a file."""
from __future__ import annotations

import io
import sys

from lcam.explain.stream import LOG_REFRESH_S, progress_bar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_redraws_rarely_when_stderr_is_a_file(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    bar = progress_bar(9, "Score-CAM", delay=0.0)
    assert bar.mininterval == LOG_REFRESH_S == 30.0
    for _ in range(9):
        bar.update(1)
    bar.close()
    text = sys.stderr.getvalue()
    assert text.count("\r") <= 3 and "Score-CAM" in text and "9.0/9" in text  # first draw, final draw


def test_bar_on_a_terminal_shows_name_and_eta(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Tty())
    bar = progress_bar(4, "RISE", delay=0.0)
    assert bar.mininterval == 0.1
    bar.update(1)
    bar.refresh()
    line = sys.stderr.getvalue().split("\r")[-1]
    assert line.startswith("RISE:") and "<" in line and "1.0/4 img" in line  # elapsed<remaining: the ETA
    bar.close()
    assert progress_bar(4, "x", enabled=False).disable
