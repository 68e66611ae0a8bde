"""mig/checkpoint/image.py without CRIU: staging the app's folder beside its image."""

from __future__ import annotations

import shutil

import pytest

from mig.checkpoint.image import CheckpointError, stage


def _folder(tmp_path):  # noqa: ANN001, ANN202
    work, run = tmp_path / "work", tmp_path / "run"
    (work / "sub").mkdir(parents=True)
    run.mkdir()
    for name in ("kept.txt", "gone.txt", "sub/inner.txt"):
        (work / name).write_text(name)
    (run / "1.ring").write_bytes(b"ring")
    return work, run


def test_a_file_removed_while_the_folder_is_copied_is_left_out(tmp_path, monkeypatch):
    """Someone else removes a file of the app's folder while a checkpoint copies it (the
    fault campaign's runner does, between rounds): the copy goes on without it. It stopped
    the replica with a shutil.Error traceback."""
    work, run = _folder(tmp_path)
    real = shutil.copy2

    def copy2(src, dst, **kw):  # noqa: ANN001, ANN003, ANN202
        if str(src).endswith("gone.txt"):
            (work / "gone.txt").unlink()
        return real(src, dst, **kw)

    monkeypatch.setattr(shutil, "copy2", copy2)
    stage(work, run, tmp_path / "staged")
    staged = tmp_path / "staged"
    assert sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*")
                  if p.is_file()) == ["run/1.ring", "work/kept.txt", "work/sub/inner.txt"]


def test_a_file_that_cannot_be_read_fails_the_checkpoint_with_its_name(tmp_path, monkeypatch):
    work, run = _folder(tmp_path)

    def copy2(src, dst, **kw):  # noqa: ANN001, ANN003, ANN202
        raise PermissionError(13, "Permission denied", str(src))

    monkeypatch.setattr(shutil, "copy2", copy2)
    with pytest.raises(CheckpointError, match="cannot copy the app's folder: .*Permission"):
        stage(work, run, tmp_path / "staged")
