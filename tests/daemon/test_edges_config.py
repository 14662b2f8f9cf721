"""Issue 9, config: the daemon's own files (state, log, ledger) may not live in the
requests folder (a consumer would take them for requests) or the records folder (the
daemon would judge its own files as records): one line naming the key, exit 3."""

from __future__ import annotations

import pytest

from .conftest import Root, cli
from .edges import PY

pytestmark = pytest.mark.slow

FILES = {"state_file": "state.json", "log_file": "dispatcher.log", "ledger_file": "ledger.sqlite3"}


@pytest.mark.parametrize("folder", ["requests", "records"])
@pytest.mark.parametrize("key", sorted(FILES))
def test_own_files_inside_the_requests_or_records_folder_are_refused(
    root: Root, key: str, folder: str
) -> None:
    inside = (root.requests if folder == "requests" else root.records) / FILES[key]
    root.write_config(**{key: str(inside)})
    for command in ("check-config", "once"):
        result = cli(PY, root, command, timeout=20)
        assert result.returncode == 3, (command, result.stdout, result.stderr)
        assert key in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not inside.exists()
