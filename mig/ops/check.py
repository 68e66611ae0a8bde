"""A ``Check`` of ``mig doctor``: what one question found and what to do, and how a list of
them is shown and turned into an exit code."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

__all__ = ["Check", "STATUSES", "exit_code", "render_text", "to_json"]


STATUSES = ("ok", "warn", "fail")



@dataclass(frozen=True)
class Check:
    check: str  # short stable name: "kernel", "criu", "topic.calls", ...
    status: str  # "ok", "warn" or "fail"
    detail: str  # what was found
    advice: str = ""  # what to do; "" when ok



def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.status == "fail" for c in checks) else 0



def render_text(checks: list[Check]) -> str:
    width = max((len(c.check) for c in checks), default=0)
    lines = []
    for c in checks:
        lines.append(f"{c.status:<4}  {c.check:<{width}}  {c.detail}")
        if c.advice:
            lines.append(f"{'':<4}  {'':<{width}}  -> {c.advice}")
    return "\n".join(lines)



def to_json(checks: list[Check]) -> str:
    return json.dumps([asdict(c) for c in checks], indent=2)

