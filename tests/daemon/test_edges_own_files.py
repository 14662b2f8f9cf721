"""The daemon's own files (log, lock, ledger and its journal, state.json) are never
followed through a symlink and never written when they belong to another user, whoever
runs the daemon (root's operator commands: test_edges_root.py): the start fails with one
line naming the file, exit 1, and the file and what a link points to are left as they were.
Kills the mutant table's nofollow and owner rows (tests/mutants/mutants.toml)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import Root, cli, record

pytestmark = pytest.mark.slow

# state first: the one a missing check lets through fastest (a rename replaces the link).
OWN = {
    "state": "state/state.json",
    "log": "logs/dispatcher.log",
    "lock": "state/dispatcher.lock",
    "ledger": "state/ledger.sqlite3",
    "journal": "state/ledger.sqlite3-journal",
}
NOBODY = 65534


def _fingerprint(path: Path) -> tuple[bytes, int, int, int]:
    st = os.lstat(path)
    data = b"" if path.is_symlink() else path.read_bytes()
    return data, st.st_mode, st.st_uid, st.st_mtime_ns


def _started_once(python: str, root: Root) -> None:
    first = cli(python, root, "once")
    assert first.returncode == 0, first.stderr
    root.drop("next.json", record("own-next"))  # something to write on the next start


def _refused(python: str, root: Root, planted: Path, words: str) -> None:
    result = cli(python, root, "once")
    # One error line (the JSON log lines the daemon mirrors to stderr aside).
    lines = [line for line in result.stderr.splitlines() if line and not line.startswith("{")]
    assert result.returncode == 1, (result.returncode, result.stderr[-500:])
    assert len(lines) == 1 and str(planted) in lines[0] and words in lines[0], lines
    assert "own-next" not in "".join(p.read_text() for p in root.requests.glob("*.json"))


@pytest.mark.parametrize("name", OWN)
def test_a_symlink_at_an_own_file_is_refused_and_its_target_left_alone(
    python: str, root: Root, name: str
) -> None:
    _started_once(python, root)
    victim = root.path.parent / "victim"
    victim.write_bytes(b'{"victim": true}\n')
    before = _fingerprint(victim)
    planted = root.path / OWN[name]
    planted.unlink(missing_ok=True)
    os.symlink(victim, planted)
    _refused(python, root, planted, "is a symlink")
    assert _fingerprint(victim) == before
    assert planted.is_symlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a file of another user)")
@pytest.mark.parametrize("name", OWN)
def test_an_own_file_of_another_user_is_refused_and_left_alone(
    python: str, root: Root, name: str
) -> None:
    _started_once(python, root)  # state/ and logs/ are root's: no drop, root runs it
    planted = root.path / OWN[name]
    if not planted.exists():
        planted.write_bytes(b"")  # the journal exists only during a transaction
    os.chown(planted, NOBODY, NOBODY)
    before = _fingerprint(planted)
    _refused(python, root, planted, f"belongs to uid {NOBODY}")
    assert _fingerprint(planted) == before
