"""The README's demo: everything built so far, end to end, on the embedded broker.

It starts the embedded broker, creates a demo app's topics, writes the app's real identity
record in a Kafka transaction, publishes a heartbeat and a member status, then reads the
topics back with the same decoder ``mig log tail`` uses and verifies them. Recording and
replaying the program itself arrive with the interceptor (README, "Status").
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from mig.broker import EmbeddedBroker
from mig.identity import app_identity
from mig.logtool import read_rows, render_text, verify
from mig.logwriter import LogWriter
from mig.topics import ensure_topics

__all__ = ["run_demo"]


def run_demo(say: Callable[[str], None], app: str = "demo") -> bool:
    started = time.monotonic()
    say("1. starting the embedded Kafka broker (first run fetches its jars) ...")
    broker = EmbeddedBroker()
    status = broker.up()
    say(f"   broker live at {status.bootstrap} after {time.monotonic() - started:.1f} s")
    settings = broker.settings

    say(f"2. creating the topics of app '{app}' ...")
    for topic, what in ensure_topics(settings, app).items():
        say(f"   {topic}: {what}")

    say("3. writing the app's identity record and a heartbeat, in one transaction ...")
    argv = [sys.executable, "-c", "print('hello from the demo app')"]
    identity = app_identity(app, argv, Path.cwd(), {"PATH": "/usr/bin:/bin"})
    now = int(time.time() * 1000)
    writer = LogWriter(settings, app, transactional_id=f"mig.{app}.demo")
    writer.send("calls", "mig.log.AppIdentity", identity, key="identity")
    writer.send("control", "mig.log.Heartbeat", {
        "app": app, "member": "demo-primary", "role": "PRIMARY", "epoch": 1,
        "ts_ms": now, "calls_offset": -1}, key="demo-primary")
    writer.send("control", "mig.log.MemberStatus", {
        "app": app, "member": "demo-primary", "role": "PRIMARY", "epoch": 1,
        "lag_records": 0, "lag_ms": 0, "health": "ok", "ts_ms": now}, key="demo-primary")
    for topic, partition, offset in writer.commit():
        say(f"   committed {topic}[{partition}]@{offset}")

    say(f"4. reading it back (what `mig log tail {app}` prints):")
    for row in read_rows(settings, app):
        say("   " + render_text(row))

    report = verify(settings, app)
    say(f"5. `mig log verify {app}`: {report.records} records, "
        + ("ok" if report.ok else f"{len(report.problems)} problems"))
    for problem in report.problems:
        say("   " + problem)
    say(f"done in {time.monotonic() - started:.1f} s; stop the broker with `mig broker down`")
    return report.ok
