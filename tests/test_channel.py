"""mig/channel.py against rings written by the real shim and by hand."""

from __future__ import annotations

import struct

import pytest

from mig.channel import F_PAD, REC, RawCall, RingError, parse_record


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

    from mig.channel import Ring, RingForeign, new_rings
    from mig.errors import MigError
    from mig.launch import private_run_dir

    run = tmp_path / "run"
    private_run_dir(run)
    assert run.stat().st_mode & 0o777 == 0o700
    Ring.create(run / "1.ring")
    assert (run / "1.ring").stat().st_mode & 0o777 == 0o600
    Ring.create(run / "2.ring")
    os.chmod(run / "2.ring", 0o666)
    with pytest.raises(RingForeign, match="mode 666"):
        Ring(run / "2.ring")
    assert set(new_rings(run, {})) == {"1"}  # the planted one is left out
    os.chmod(run, 0o777)
    with pytest.raises(MigError, match="other users could plant rings"):
        private_run_dir(run)
