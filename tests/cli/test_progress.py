"""Progress of long operations: a structured line now and then when stderr is not a
terminal (a journal), a line rewritten in place when it is."""

from __future__ import annotations

import io

from structlog.testing import capture_logs

from mig.progress import Progress


def test_log_lines_are_spaced_and_the_end_is_always_said(monkeypatch):
    clock = iter([0.0, 0.0, 1.0, 2.0, 6.0, 6.5, 7.0])
    monkeypatch.setattr("mig.progress.time.monotonic", lambda: next(clock))
    with capture_logs() as logs:
        p = Progress("checkpoint c1 upload", every_s=5.0)
        for done in (1e6, 2e6, 3e6, 4e6, 5e6):
            p.update(done, 8e6)
        p.update(8e6, 8e6)
    lines = [e for e in logs if e["event"] == "mig.progress"]
    # the first update (at 0 s, none shown before), the one 6 s later, and the end
    assert [(e["done"], e["total"]) for e in lines] == [(1.0, 8.0), (4.0, 8.0), (8.0, 8.0)]
    assert all(e["what"] == "checkpoint c1 upload" and e["unit"] == "MB" for e in lines)


def test_a_terminal_gets_one_line_rewritten(monkeypatch):
    err = io.StringIO()
    err.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr("mig.progress.sys.stderr", err)
    clock = iter([0.0, 0.5, 1.0, 1.5])
    monkeypatch.setattr("mig.progress.time.monotonic", lambda: next(clock))
    p = Progress("catching up", unit="batches", scale=1)
    p.update(900)
    p.update(400)
    p.end()
    out = err.getvalue()
    assert out.count("\r") == 2 and out.endswith("\n")
    assert "900.0 batches to go" in out and "400.0 batches to go" in out
