"""pipeline.judge_record_file on real files: a read that may only have caught the file
mid-write (it changed while being read, or vanished between the listing and the open) is
retried until the file settles (`pending`), never rejected on the spot; what a file is
(a symlink) is rejected at once."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest
from hyops_dispatcher import pipeline
from hyops_dispatcher.verdicts import FileSig

from .conftest import record
from .pure import config

SETTLE = 5


def _judge(records: Path, name: str, sig: FileSig | None = None) -> pipeline.Judged:
    """judge_record_file as a pass calls it, with the stat the listing saw (default: now)."""
    cfg = config(decision_records_dir=str(records), settle_seconds=SETTLE)
    sig = sig or FileSig.of(os.lstat(records / name))
    judged = pipeline.judge_record_file(
        cfg,
        name,
        sig,
        None,
        time.time(),
        prior_of=lambda _id: None,
        existing=lambda _id: None,
        episodes=None,
    )
    assert judged is not None
    return judged


def test_a_file_that_changes_while_it_is_read_is_pending_not_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "r.json"
    target.write_text(json.dumps(record("pl-changing")))
    real_read = os.read
    appended = []

    def read_while_the_writer_appends(fd: int, n: int) -> bytes:
        data = real_read(fd, n)
        if not appended:
            with open(target, "ab") as writer:  # the writer is not done yet
                writer.write(b" ")
            appended.append(True)
        return data

    monkeypatch.setattr(pipeline.os, "read", read_while_the_writer_appends)
    outcome = _judge(tmp_path, "r.json").outcome
    monkeypatch.undo()
    assert (outcome.outcome, outcome.source) == ("pending", "read"), outcome
    assert "changed while being read" in outcome.reason
    assert time.time() < outcome.retry_at <= time.time() + SETTLE + 1
    # Once it stops changing it is read and decided like any other file.
    assert _judge(tmp_path, "r.json").outcome.outcome == "emitted"


def test_a_file_that_vanishes_before_it_is_read_is_pending_not_rejected(tmp_path: Path) -> None:
    target = tmp_path / "gone.json"
    target.write_text(json.dumps(record("pl-gone")))
    listed = FileSig.of(os.lstat(target))
    target.unlink()  # renamed away by its writer between the listing and the read
    outcome = _judge(tmp_path, "gone.json", listed).outcome
    assert (outcome.outcome, outcome.source) == ("pending", "read"), outcome
    assert "vanished" in outcome.reason


def test_a_symlink_is_rejected_at_once(tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text(json.dumps(record("pl-real")))
    os.symlink(tmp_path / "real.json", tmp_path / "link.json")
    outcome = _judge(tmp_path, "link.json").outcome
    assert outcome.outcome == "rejected" and "symlink" in outcome.reason


@pytest.mark.parametrize("where", ["open", "read"])
@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EIO])
def test_a_read_error_about_the_host_is_no_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, code: int
) -> None:
    """Out of descriptors, memory or a failing disk says nothing about the record: the
    read raises ReadFault (the loop retries it), never an outcome such as `rejected`."""
    (tmp_path / "r.json").write_text(json.dumps(record("pl-host")))
    sig = FileSig.of(os.lstat(tmp_path / "r.json"))

    def fails(*_args: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(pipeline.os, where, fails)
    with pytest.raises(pipeline.ReadFault):
        _judge(tmp_path, "r.json", sig)


def test_a_read_error_about_the_file_is_a_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "r.json").write_text(json.dumps(record("pl-perm")))
    sig = FileSig.of(os.lstat(tmp_path / "r.json"))

    def denied(*_args: object) -> None:
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(pipeline.os, "open", denied)
    outcome = _judge(tmp_path, "r.json", sig).outcome
    assert outcome.outcome in ("pending", "rejected") and "unreadable" in outcome.reason
