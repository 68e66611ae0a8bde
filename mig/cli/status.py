"""``mig status [NAME]``: the members of an app (or of every app), their roles and lag."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from mig.cli.common import BOOTSTRAP, CONFIG

if TYPE_CHECKING:  # (imported when a command runs: mig --help stays fast)
    from mig.control.status import AppStatus, MemberView

CLEAR = "\x1b[H\x1b[2J"


def status(
    name: Optional[str] = typer.Argument(None, metavar="NAME",
                                         help="The app's name; omitted: every app."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document, for scripts."),
    watch: Optional[float] = typer.Option(None, "--watch", "-w", metavar="SECONDS", min=0.1,
                                          help="Redraw every SECONDS until Ctrl-C."),
    since: float = typer.Option(600.0, "--since", metavar="SECONDS", min=0,
                                help="Read the control records of the last SECONDS (0: all"
                                     " of them; a member silent for longer is not shown)."),
    bootstrap: Optional[str] = BOOTSTRAP,
    config: Optional[Path] = CONFIG,
) -> None:
    """Show every member of an app: role, epoch, lag, last sign of life, health; and the
    current primary and last promotion. Reads the last 10 minutes of mig.NAME.control
    (--since); with --config, a member is stale after 10 of its [replica] heartbeat_ms
    (else after 2 s)."""
    from mig.control.status import collect
    from mig.errors import MigError
    from mig.kafka.connect import resolve_kafka

    heartbeat_ms = None
    if config is not None:
        from mig.config import load_config

        heartbeat_ms = load_config(config).replica.heartbeat_ms
    settings = resolve_kafka(bootstrap, config)

    def show() -> None:
        statuses = collect(settings, name, heartbeat_ms, since_s=since)
        text = to_json(statuses) if as_json else render_text(statuses)
        if watch is not None and not as_json and sys.stdout.isatty():
            text = CLEAR + text
        typer.echo(text)

    show()  # a first failure (unknown app, no broker) ends the command
    if watch is None:
        return
    try:
        while True:
            time.sleep(watch)
            if not as_json and not sys.stdout.isatty():
                typer.echo("")  # a blank line between printouts
            try:
                show()
            except MigError as exc:  # keep watching through a broker's hiccup
                typer.echo(f"mig: error: {exc}", err=True)
    except KeyboardInterrupt:
        return


def to_json(statuses: Sequence[AppStatus]) -> str:
    """One JSON document: ``{"apps": [...]}``."""
    return json.dumps({"apps": [asdict(st) for st in statuses]}, separators=(",", ":"))


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _header(st: AppStatus) -> list[str]:
    from mig.control.status import ago

    line = (f"app {st.app}  epoch {_dash(st.epoch)}  primary {_dash(st.primary)}")
    p = st.last_promotion
    if p is None:
        line += "  last promotion: none"
    else:
        timing = ", ".join(f"{k} {p[k + '_ms']} ms" for k in ("detection", "promotion")
                           if p[k + "_ms"] is not None)
        line += (f"  last promotion: {p['member']} epoch {p['previous_epoch']}->"
                 f"{p['new_epoch']} ({p['reason']}{', ' + timing if timing else ''})"
                 f" {ago(p['age_ms'])} ago")
    lines = [line]
    m = st.last_migration
    if m is not None and m["kind"] == "handoff":
        lines.append(f"  last handoff: {m['from_member']} -> {m['to_member']} at epoch"
                     f" {m['epoch']}, {ago(m['age_ms'])} ago")
    elif m is not None:
        lines.append(f"  migration requested: to {m['to_member'] or 'any replica'}"
                     f" by {m['requested_by']} ({m['reason']}), {ago(m['age_ms'])} ago,"
                     " no handoff yet")
    if st.checkpoints:
        k = st.checkpoints[-1]
        offsets = ",".join(f"{p}:{o}" for p, o in sorted(k["offsets"].items()))
        lines.append(f"  last checkpoint: {k['checkpoint_id']} by {k['member']}, calls offsets"
                     f" {offsets}, {k['size']} bytes, {ago(k['age_ms'])} ago"
                     f" ({len(st.checkpoints)} kept)")
    if st.since_ms is not None:
        lines.append(f"  read the control records of the last"
                     f" {ago(max(0, st.now_ms - st.since_ms))} ({st.records}): a member"
                     " silent for longer is not shown (--since 0 reads them all)")
    c = st.pending_claim
    if c is not None:
        lines.append(f"  claim in progress: {c['member']} for epoch {c['epoch']}"
                     f" ({c['reason']}), {ago(c['age_ms'])} ago")
    return lines


def _row(m: MemberView) -> tuple[str, ...]:
    from mig.control.status import ago

    return (m.member, _dash(m.host), m.role, str(m.epoch), _dash(m.lag_records),
            _dash(m.lag_ms), f"{ago(m.age_ms)} ago", _dash(m.checkpoint), m.state)


def render_text(statuses: Sequence[AppStatus]) -> str:
    """A header per app and an aligned table of its members."""
    if not statuses:
        return "no apps (no mig.*.control topics)"
    blocks = []
    for st in statuses:
        lines = _header(st)
        if not st.members:
            lines.append("  no members have reported (no heartbeat or status records)")
        else:
            rows = [COLUMNS, *(_row(m) for m in st.members)]
            widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
            lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                      .rstrip() for r in rows]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


COLUMNS = ("MEMBER", "HOST", "ROLE", "EPOCH", "LAG", "LAG_MS", "SEEN", "CHECKPOINT", "STATE")

