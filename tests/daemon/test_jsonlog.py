"""The event log's stderr for journald (issue 16): when stderr is the stream systemd names
in JOURNAL_STREAM, every line starts with its syslog priority (`<3>` error, `<4>` warning,
`<6>` info, `<7>` debug), so `journalctl -p warning` shows the daemon's warnings and
errors; anywhere else the lines are plain JSON. Driven in process on the real fd 2."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hyops_dispatcher.jsonlog import JournalLines, JsonLog, journal_stream


@contextlib.contextmanager
def stderr_into(path: Path) -> Iterator[None]:
    """fd 2 is `path` while the block runs (what systemd gives a unit's stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


def stream_of(path: Path) -> str:
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}"


def emit_all(level: str = "DEBUG") -> None:
    log = JsonLog(None, level, 1 << 20, 1)
    log.event("pruned", level="DEBUG", reason="d")
    log.event("started", pid=1)
    log.event("stale", level="WARNING", file="s.json")
    log.event("error", level="ERROR", reason="disk full")


def test_lines_carry_their_priority_when_stderr_is_the_journal_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "journal"
    out.touch()
    monkeypatch.setenv("JOURNAL_STREAM", stream_of(out))
    with stderr_into(out):
        assert journal_stream()
        emit_all()
    lines = out.read_text().splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>"]
    events = [json.loads(line[3:]) for line in lines]
    assert [e["event"] for e in events] == ["pruned", "started", "stale", "error"]


@pytest.mark.parametrize("stream", [None, "", "12:34", "garbage"])
def test_lines_stay_plain_json_anywhere_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream: str | None
) -> None:
    out = tmp_path / "terminal"
    out.touch()
    if stream is None:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    else:
        monkeypatch.setenv("JOURNAL_STREAM", stream)  # another stream (a pipe from it)
    with stderr_into(out):
        assert not journal_stream()
        emit_all()
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["event"] for line in lines)


def test_a_failed_log_write_is_an_error_line_in_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "journal"
    out.touch()
    monkeypatch.setenv("JOURNAL_STREAM", stream_of(out))
    with stderr_into(out):
        log = JsonLog(str(tmp_path / "d.log"), "INFO", 1 << 20, 1)
        assert log.fd is not None
        os.close(log.fd)
        log.fd = os.open(os.devnull, os.O_RDONLY)  # every write fails (EBADF)
        log.event("stale", level="WARNING", file="s.json")
        log.close()
    first, second = out.read_text().splitlines()
    assert first.startswith("<3>") and "log write failed" in first
    assert second.startswith("<4>") and json.loads(second[3:])["event"] == "stale"


def test_text_lines_of_the_commands_are_errors_in_the_journal(tmp_path: Path) -> None:
    """The one-line `dispatcher: ...` errors (a bad config at start, exit 3) go through
    sys.stderr; cli wraps it in JournalLines when stderr is the journal stream."""
    out = tmp_path / "journal"
    with open(out, "w", encoding="utf-8") as raw:
        wrapped = JournalLines(raw, 3)
        print("dispatcher: config.json: poll_seconds: must be >= 5", file=wrapped)
        wrapped.write("usage: dispatcher.py\n  second ")
        wrapped.write("part\n")
        wrapped.flush()
    assert out.read_text().splitlines() == [
        "<3>dispatcher: config.json: poll_seconds: must be >= 5",
        "<3>usage: dispatcher.py",
        "<3>  second part",
    ]


def test_the_daemon_process_prefixes_its_start_error_and_events(tmp_path: Path) -> None:
    """The real entry point with stderr on the 'journal' file: a refused config at start
    (exit 3) is an error line; a good start's events carry their levels."""
    import subprocess

    from .conftest import DISPATCHER, cli_env

    out = tmp_path / "journal"
    out.touch()
    env = cli_env({"JOURNAL_STREAM": stream_of(out)})
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1}')
    with open(out, "ab") as err:
        rc = subprocess.run(
            [sys.executable, str(DISPATCHER), "--config", str(bad), "once"],
            stderr=err,
            env=env,
            timeout=60,
        ).returncode
    assert rc == 3
    (line,) = out.read_text().splitlines()
    assert line.startswith("<3>dispatcher: "), line
