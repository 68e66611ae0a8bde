"""The call kinds agree in the C header, the Python mirror and the Avro enum."""

from __future__ import annotations

import re
from pathlib import Path

from mig.ring.kinds import KIND_NUMBERS
from mig.wire.codec import Codec

HEADER = Path(__file__).resolve().parents[2] / "shim" / "src" / "mig_kinds.h"


def test_c_header_matches_python():
    pairs = re.findall(r"X\((\w+), (\d+)\)", HEADER.read_text())
    assert {name: int(num) for name, num in pairs} == KIND_NUMBERS


def test_every_kind_is_an_avro_symbol():
    batch = Codec.default().schema("mig.log.CallBatch")
    call = batch["fields"][[f["name"] for f in batch["fields"]].index("calls")]["type"]["items"]
    kind = next(f["type"] for f in call["fields"] if f["name"] == "kind")
    assert set(KIND_NUMBERS) <= set(kind["symbols"])
