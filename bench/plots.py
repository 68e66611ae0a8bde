"""Figures of the benchmarks as PNGs, from the JSON they write with ``--json FILE``.

    .venv/bin/python bench/failover_bench.py --json failover.json
    .venv/bin/python bench/interceptor_bench.py --json interceptor.json
    .venv/bin/python bench/plots.py --failover failover.json --interceptor interceptor.json

writes into docs/img/ (``--out DIR``):

- ``failover-gaps.png``: the client-visible gap of every crash failover and every
  ``mig migrate`` switchover, each gap split into last answer -> fault, fault -> Promotion
  record, Promotion -> first answer, with the targets;
- ``replica-lag.png``: the replicas' ``lag_ms`` over the run (their ``MemberStatus``
  records), with the promotions marked;
- ``overhead.png``: kvserver's throughput under mig as a fraction of native, per mode, and
  the replay / record wall-time ratio.

Needs matplotlib (``pip install -e '.[bench]'``). Each figure is drawn from what its JSON
holds; a missing file skips its figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGETS_MS = {"crash": (2000, 3000), "migrate": (300, None)}  # p50, p99 (bench targets)
SPLIT = ("last answer -> fault", "fault -> Promotion", "Promotion -> first answer")


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def failover_gaps(doc: dict[str, Any], out: Path) -> Path:
    """One bar per round, stacked from its three parts, crash rounds then migrations."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for ax, kind in zip(axes, ("crash", "migrate"), strict=True):
        rounds = [r for r in doc["rounds"] if r["kind"] == kind and r["gap_s"] is not None]
        xs = list(range(1, len(rounds) + 1))
        bottoms = [0.0] * len(rounds)
        for part, label in enumerate(SPLIT):
            # a part measured a few ms below zero (two clocks' reading order) counts as 0
            heights = [max(0.0, float(r["split"][part])) if r.get("split") else 0.0
                       for r in rounds]
            ax.bar(xs, heights, bottom=bottoms, label=label)
            bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
        gaps = [r["gap_s"] * 1000 for r in rounds]
        ax.plot(xs, gaps, "k.", label="gap the client saw")
        p50, p99 = TARGETS_MS[kind]
        ax.axhline(p50, color="tab:red", linestyle="--", linewidth=1, label=f"p50 target {p50} ms")
        if p99 is not None:
            ax.axhline(p99, color="tab:red", linestyle=":", linewidth=1,
                       label=f"p99 target {p99} ms")
        title = "crash (SIGKILL of the host)" if kind == "crash" else "mig migrate"
        ax.set_title(f"{title}: {len(rounds)} rounds")
        ax.set_xlabel("round")
        ax.set_ylabel("client-visible gap (ms)")
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Failover gaps ({doc['started']}; {doc['machine']})", fontsize=8)
    return _save(plt, fig, out / "failover-gaps.png")


def replica_lag(doc: dict[str, Any], out: Path) -> Path:
    """Each replica's lag_ms over the run; promotions as vertical lines."""
    plt = _pyplot()
    statuses = [s for s in doc["statuses"] if s["health"] == "replaying"]
    t0 = min((s["ts_ms"] for s in doc["statuses"]), default=0)
    fig, ax = plt.subplots(figsize=(11, 4))
    by_member: dict[str, list[dict[str, Any]]] = {}
    for s in statuses:
        by_member.setdefault(s["member"], []).append(s)
    for member, points in by_member.items():
        ax.plot([(p["ts_ms"] - t0) / 1000 for p in points], [p["lag_ms"] for p in points],
                ".-", markersize=3, linewidth=0.8, label=member)
    for promo in doc["promotions"]:
        color = "tab:red" if promo["reason"] == "failover" else "tab:green"
        ax.axvline((promo["ts_ms"] - t0) / 1000, color=color, linewidth=0.8, alpha=0.6)
    # a replica that has just started is seconds behind while it catches up, the hot ones
    # a few ms: a log scale shows both
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("seconds since the first status (red: failover, green: handoff)")
    ax.set_ylabel("lag_ms (age of the oldest call\nnot yet replayed), log scale")
    ax.set_title(f"Replica lag over the run ({len(statuses)} statuses of"
                 f" {len(by_member)} replicas)")
    if len(by_member) <= 12:
        ax.legend(fontsize=7, ncol=2, loc="upper right")
    return _save(plt, fig, out / "replica-lag.png")


def overhead(doc: dict[str, Any], out: Path) -> Path:
    """kvserver req/s under mig / native per run, and replay / record wall time."""
    plt = _pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    kv = doc.get("kvserver", {})
    # the other native run stays in: how far it is from 1.0 is the run's noise
    runs = {k: v for k, v in kv.get("runs", {}).items() if k != kv.get("base")}
    labels = list(runs)
    ax.barh(labels, [runs[k]["ratio"] for k in labels],
            color=["grey" if k.startswith("native") else "tab:blue" for k in labels])
    for y, k in enumerate(labels):
        ax.text(runs[k]["ratio"], y, f" {runs[k]['ratio']:.2f}x", va="center", fontsize=8)
    for x, what in ((0.9, "async target"), (0.7, "output target")):
        ax.axvline(x, color="tab:red", linestyle="--", linewidth=1)
        ax.text(x, len(labels) - 0.5, what, color="tab:red", fontsize=7, ha="right")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel(f"req/s as a fraction of native ({kv.get('base', 'native')})")
    ax.set_title("kvserver, 32 clients")
    ax.invert_yaxis()
    replay = doc.get("replay")
    if replay:
        walls = [replay["native_s"], replay["record_s"], replay["replay_s"]]
        ax2.bar(["native", "record", "replay"], walls, color=["grey", "tab:blue", "tab:green"])
        ax2.set_ylabel("wall time (s)")
        ax2.set_title("200 x 5 ms sleeps")
    fig.suptitle(f"Interceptor overhead ({doc['started']}; {doc['machine']})", fontsize=8)
    return _save(plt, fig, out / "overhead.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--failover", type=Path, metavar="JSON",
                        help="what bench/failover_bench.py --json wrote")
    parser.add_argument("--interceptor", type=Path, metavar="JSON",
                        help="what bench/interceptor_bench.py --json wrote")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img",
                        help="folder of the PNGs (default docs/img)")
    args = parser.parse_args(argv)
    if args.failover is None and args.interceptor is None:
        parser.error("give --failover JSON, --interceptor JSON or both")
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, bench, draw in ((args.failover, "failover", (failover_gaps, replica_lag)),
                              (args.interceptor, "interceptor", (overhead,))):
        if path is None:
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"plots: error: cannot read {path}: {exc}", file=sys.stderr)
            return 1
        if doc.get("bench") != bench:
            print(f"plots: error: {path} is not the JSON of bench/{bench}_bench.py"
                  f" (its 'bench' is {doc.get('bench')!r})", file=sys.stderr)
            return 1
        written += [fn(doc, args.out) for fn in draw]
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
