"""bench/plots.py draws its three PNGs from JSON shaped as the benchmarks write it, and
refuses a file of the wrong benchmark with one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import plots  # noqa: E402 - bench/ is not a package

PNG = b"\x89PNG\r\n\x1a\n"


def failover_doc() -> dict:
    rounds = []
    for i in range(6):
        kind = "crash" if i % 2 == 0 else "migrate"
        split = (3, 1100, 400) if kind == "crash" else (2, 80, 50)
        rounds.append({"index": i, "kind": kind, "gap_s": sum(split) / 1000,
                       "split": list(split), "detection_ms": 1010, "promotion_ms": 120})
    statuses = [{"ts_ms": 1_000_000 + 200 * k, "member": f"r{k // 50}", "health": "replaying",
                 "lag_ms": k % 7, "lag_records": k % 3} for k in range(300)]
    promotions = [{"ts_ms": 1_000_000 + 10_000 * j, "member": f"r{j}",
                   "reason": "failover" if j % 2 else "handoff", "new_epoch": j + 2,
                   "detection_ms": None, "promotion_ms": 40} for j in range(5)]
    return {"bench": "failover", "started": "2026-11-25T07:00:00", "machine": "test",
            "failure": "", "rounds": rounds, "steady_lags": [[0, 0]], "probe_ms": [1.0],
            "statuses": statuses, "promotions": promotions}


def interceptor_doc() -> dict:
    runs = {"native (before)": {"rps": 100_000.0, "ratio": 1.0},
            "native (after)": {"rps": 98_000.0, "ratio": 0.98},
            "async": {"rps": 55_000.0, "ratio": 0.55},
            "output": {"rps": 20_000.0, "ratio": 0.2}}
    return {"bench": "interceptor", "started": "2026-11-25T07:00:00", "machine": "test",
            "quick": True, "kvserver": {"base": "native (before)", "runs": runs},
            "replay": {"native_s": 1.1, "record_s": 2.2, "replay_s": 0.9, "same_output": True}}


def test_plots_from_benchmark_json(tmp_path: Path, capsys) -> None:
    f = tmp_path / "failover.json"
    f.write_text(json.dumps(failover_doc()))
    i = tmp_path / "interceptor.json"
    i.write_text(json.dumps(interceptor_doc()))
    out = tmp_path / "img"
    assert plots.main(["--failover", str(f), "--interceptor", str(i), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["failover-gaps.png", "overhead.png", "replica-lag.png"]
    assert all((out / n).read_bytes().startswith(PNG) for n in names)
    assert capsys.readouterr().out.count("wrote ") == 3


def test_wrong_json_is_one_line(tmp_path: Path, capsys) -> None:
    i = tmp_path / "interceptor.json"
    i.write_text(json.dumps(interceptor_doc()))
    assert plots.main(["--failover", str(i), "--out", str(tmp_path / "img")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"plots: error: {i} is not the JSON of bench/failover_bench.py"
                   " (its 'bench' is 'interceptor')")
