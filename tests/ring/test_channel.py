"""mig/ring/memory.py against rings written by the real shim and by hand."""

from __future__ import annotations

import struct

import pytest

from mig.ring.memory import F_PAD, REC, RawCall, RingError
from tests.ring.support import new_ring, parse_record


def _call(seq: int, payload: bytes = b"") -> RawCall:
    return RawCall(3, 0, 0, 0, seq, 0, (1, 2, 3, 4), 5, 0, 0, payload)


def test_pack_parse_round_trip():
    blob = _call(7, b"abc").pack()
    call, length = parse_record(blob, 0, len(blob))
    assert length == len(blob) == 104 and call == _call(7, b"abc")


def test_padding_shorter_than_a_header_is_skipped():
    # the shim pads the end of the data area with whatever room is left, 8 bytes or more
    pad = struct.pack("<IHH", 16, 0, F_PAD) + b"\0" * 8
    assert parse_record(pad, 0, 16) == (None, 16)


@pytest.mark.parametrize("blob, reason", [
    (b"\0" * 4, "cut short"),
    (struct.pack("<IHH", 12, 3, 0) + b"\0" * 4, "does not fit"),
    (struct.pack("<IHH", 40, 3, 0) + b"\0" * 32, "below the header size"),
    (struct.pack("<IHH", 4096, 3, 0) + b"\0" * 88, "does not fit"),
])
def test_malformed_records_are_refused(blob, reason):
    with pytest.raises(RingError, match=reason):
        parse_record(blob, 0, len(blob))


def test_payload_overrunning_its_record_is_refused():
    blob = bytearray(_call(1, b"x" * 8).pack())
    struct.pack_into("<I", blob, 88, 4000)  # payload_len
    with pytest.raises(RingError, match="overruns"):
        parse_record(bytes(blob), 0, len(blob))
    assert REC.size == 96


def test_rings_and_run_folders_must_be_private(tmp_path):
    """The shim's channel to mig is private to the app's user: a ring another user could
    write (or read) is ignored with an error, and a run folder others can write is refused."""
    import os

    from mig.errors import MigError
    from mig.member.launch import private_run_dir
    from mig.ring.memory import Ring, RingForeign, new_rings

    run = tmp_path / "run"
    private_run_dir(run)
    assert run.stat().st_mode & 0o777 == 0o700
    new_ring(run / "1.ring")
    assert (run / "1.ring").stat().st_mode & 0o777 == 0o600
    new_ring(run / "2.ring")
    os.chmod(run / "2.ring", 0o666)
    with pytest.raises(RingForeign, match="mode 666"):
        Ring(run / "2.ring")
    assert set(new_rings(run, {})) == {"1"}  # the planted one is left out
    os.chmod(run, 0o777)
    with pytest.raises(MigError, match="other users could plant rings"):
        private_run_dir(run)


def test_python_ring_layout_is_the_c_headers(tmp_path):
    """mig/ring/memory.py re-states shim/src/mig_ring.h: every header field at the C offset,
    the record header of the same size and field order (compiled and asked, not read)."""
    import subprocess
    from pathlib import Path

    from mig.ring.memory import _OFF, HDR_SIZE

    src = Path(__file__).resolve().parents[2] / "shim" / "src"
    fields = sorted(_OFF)
    rec = ["len", "kind", "flags", "tid", "err", "seq", "result", "args", "wall_ns",
           "out_len", "out_hash", "payload_len", "reserved"]
    prog = tmp_path / "layout.c"
    prog.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"mig_ring.h\"\nint main(void){\n"
        + "".join(f'printf("{f} %zu\\n", offsetof(struct mig_ring_hdr, {f}));\n'
                  for f in fields)
        + "".join(f'printf("rec.{f} %zu\\n", offsetof(struct mig_rec, {f}));\n' for f in rec)
        + 'printf("rec %zu\\nhdr %d\\n", sizeof(struct mig_rec), MIG_RING_HDR);\nreturn 0;}\n')
    subprocess.run(["cc", "-I", str(src), "-o", str(tmp_path / "layout"), str(prog)],
                   check=True, capture_output=True)
    out = dict(line.split() for line in subprocess.run(
        [str(tmp_path / "layout")], check=True, capture_output=True, text=True).stdout.split("\n")
        if line)
    assert {f: int(out[f]) for f in fields} == _OFF
    assert int(out["rec"]) == REC.size and int(out["hdr"]) == HDR_SIZE
    # the struct format's fields in the C order: each offset is where Python packs it
    sizes = {"I": 4, "H": 2, "i": 4, "Q": 8, "q": 8}
    offsets, at = [], 0
    for code in REC.format.lstrip("<").replace("4q", "q"):
        offsets.append(at)
        at += sizes[code] * (4 if len(offsets) == rec.index("args") + 1 else 1)
    assert [int(out[f"rec.{f}"]) for f in rec] == offsets
