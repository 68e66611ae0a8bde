"""The fault campaign: ``python -m tests.campaign [--rounds N] [--faults a,b] [--seed S]``.

Starts three test hosts and a 3-broker cluster, deploys the test app with a primary and two
replicas under a steady write load, and runs N rounds of every fault (in a shuffled order),
checking after each that nothing acknowledged was lost, nothing was acknowledged twice and
that hot replicas equal the primary. Prints a line per round, then the table of
docs/reliability.md; writes every round as JSON lines to OUT/rounds.jsonl. Exits 1 when any
write was lost or double-acknowledged, a hot replica differed, or a round did not recover.
Needs root (network namespaces, mounts). Bounded: it stops after --max-minutes.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from mig.logs import configure_logging
from tests.campaign.faults import FAULTS
from tests.campaign.runner import Campaign, read_results, summary, table, write_results
from tests.campaign.world import World


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.campaign", description=__doc__)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of each fault (1)")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help="comma-separated fault names (default: all)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    parser.add_argument("--max-minutes", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=None, help="folder for logs and results")
    parser.add_argument("--unsigned", action="store_true",
                        help="the apps' records not signed; every fault but hostile")
    parser.add_argument("--table", type=Path, default=None, metavar="ROUNDS.JSONL",
                        help="only print the table of an earlier run's rounds")
    args = parser.parse_args(argv)
    if args.table is not None:
        print(table(read_results(args.table)))
        return 0
    configure_logging(level="error")  # the members log to their own files
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        parser.error(f"unknown fault {unknown[0]!r}; known: {', '.join(FAULTS)}")
    if args.unsigned and "hostile" in faults:  # it writes junk the signatures refuse
        if args.faults != ",".join(FAULTS):
            parser.error("--unsigned runs without the hostile fault: unsigned records"
                         " cannot tell a forged one")
        faults.remove("hostile")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    seed = args.seed if args.seed is not None else int(time.time())
    out = args.out or Path(tempfile.mkdtemp(prefix="mig-campaign-"))
    out.mkdir(parents=True, exist_ok=True)
    plan = faults * args.rounds
    random.Random(seed).shuffle(plan)
    print(f"campaign: seed {seed}, {len(plan)} rounds, logs in {out}", file=sys.stderr)
    deadline = time.monotonic() + args.max_minutes * 60
    world = World(out / "world", signed=not args.unsigned)
    try:
        rows = Campaign(out, seed, deadline).run(plan, world)
    finally:
        world.close()
    write_results(rows, out / "rounds.jsonl")
    print(table(rows))
    print(f"\nseed {seed}; every round in {out / 'rounds.jsonl'}")
    bad = [s for s in summary(rows) if s["lost"] or s["double"] or s["unequal"] or s["failed"]]
    return 1 if bad or len(rows) < len(plan) else 0


if __name__ == "__main__":
    sys.exit(main())
