"""`approve` and `withdraw`: the operator's two writes about a request, and what they
leave behind (the consumer's marker; the withdrawn archive).

Invariant: the daemon never runs this; a marker is written only by a person's command,
as the approvals folder's owner, never through a symlink; a withdrawn request leaves the
requests folder in one rename and is never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from typing import Callable, Iterator, Optional

from .approvals import approval_marker, approval_state, request_facts, request_path
from .config import Config
from .console import err
from .fsio import fsync_dir, read_json_quiet, write_file_durably
from .ids import DISPATCH_ID_RE, iso_ts
from .jsonlog import open_log
from .record import is_record_name
from .states import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE

MARKER_SCHEMA_VERSION = 1


def withdrawn_dir(config: Config) -> str:
    return os.path.join(os.path.dirname(config.state_file), "withdrawn")


def withdrawn_note(config: Config, dispatch_id: str) -> Optional[dict]:
    return read_json_quiet(os.path.join(withdrawn_dir(config), dispatch_id + ".withdrawn.json"))


def withdrawn_requests(config: Config) -> list:
    """(request doc, note) of every withdrawn request, by name."""
    folder = withdrawn_dir(config)
    try:
        names = sorted(
            n for n in os.listdir(folder) if is_record_name(n) and ".withdrawn." not in n
        )
    except OSError:
        return []
    out = []
    for name in names:
        doc = read_json_quiet(os.path.join(folder, name))
        if doc is not None:
            out.append((doc, withdrawn_note(config, name[:-5]) or {}))
    return out


@contextlib.contextmanager
def as_owner(folder: str) -> Iterator[None]:
    """Run as root: act as the folder's owner (effective ids) while inside; else as is."""
    if os.geteuid() != 0:
        yield
        return
    st = os.stat(folder)
    groups = os.getgroups()
    os.setgroups([st.st_gid])
    os.setegid(st.st_gid)
    os.seteuid(st.st_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(groups)


def _superseded(config: Config, dispatch_id: str) -> bool:
    try:
        names = [n for n in os.listdir(config.requests_dir) if is_record_name(n)]
    except OSError:
        return False
    for name in names:
        doc = read_json_quiet(os.path.join(config.requests_dir, name)) or {}
        if doc.get("supersedes") == dispatch_id:
            return True
    return False


def _log(config: Config, event: str, **fields) -> None:
    log = open_log(config, to_stderr=False, rotate=False)
    try:
        log.event(event, **fields)
    finally:
        log.close()


def cmd_approve(
    config: Config,
    dispatch_id: str,
    by: str,
    note: str,
    force: bool,
    drop: Callable[[], None],
) -> int:
    """Write `<approvals_dir>/<dispatch_id>.approved.json` for a request that awaits."""
    if not DISPATCH_ID_RE.match(dispatch_id):
        err(f"{dispatch_id!r}: not a dispatch id (dispatch-<ts>-<type>-<hash>)")
        return EXIT_USAGE
    if not by.strip() or len(by) > 100 or len(note) > 1000:
        err("--by NAME is required (at most 100 characters; --note at most 1000)")
        return EXIT_USAGE
    folder = config.approvals_dir
    with as_owner(os.path.dirname(config.state_file)):
        withdrawn = withdrawn_note(config, dispatch_id)
        doc = read_json_quiet(request_path(config, dispatch_id))
        superseded = _superseded(config, dispatch_id)
    marker = approval_marker(config, dispatch_id)
    if not os.path.isdir(folder):
        err(f"approvals folder {folder} does not exist: no consumer yet, nothing would read it")
        return EXIT_RUNTIME
    if os.path.lexists(marker):
        old = read_json_quiet(marker) or {}
        err(
            f"{dispatch_id}: already approved by {old.get('approved_by') or '(unknown)'} "
            f"at {old.get('approved_at') or '?'} ({marker})"
        )
        return EXIT_RUNTIME
    facts = request_facts(doc)
    if withdrawn is not None and not force:
        err(
            f"{dispatch_id}: withdrawn at {withdrawn.get('withdrawn_at')} "
            f"({withdrawn.get('reason')}); refusing (--force to approve anyway)"
        )
        return EXIT_RUNTIME
    if facts is None and withdrawn is None:
        err(f"no request {dispatch_id} in {config.requests_dir}")
        return EXIT_RUNTIME
    if facts is not None:
        if not facts.needs_approval:
            err(f"{dispatch_id}: status queued, it needs no approval")
            return EXIT_RUNTIME
        state = approval_state(facts, False, superseded, time.time())
        why = "synthetic (a validate-handoff check)" if facts.synthetic else state
        if (facts.synthetic or state != "awaiting") and not force:
            err(f"{dispatch_id}: {why}; refusing (--force to approve anyway)")
            return EXIT_RUNTIME
    source = doc or {}
    body = {
        "schema_version": MARKER_SCHEMA_VERSION,
        "dispatch_id": dispatch_id,
        "source_decision_id": source.get("source_decision_id"),
        "route": source.get("route"),
        "approved_by": by,
        "approved_at": iso_ts(time.time()),
        "note": note,
        "forced": bool(force),
        "approved_with": "dispatcher.py approve",
    }
    data = (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()
    with as_owner(folder):
        write_file_durably(marker, data, mode=0o644)
    drop()
    _log(
        config,
        "approved",
        dispatch_id=dispatch_id,
        decision_id=body["source_decision_id"],
        approved_by=by,
        reason=note or None,
        forced=bool(force),
        file=marker,
    )
    print(f"approved {dispatch_id} by {by} ({marker})")
    return EXIT_OK


def cmd_withdraw(config: Config, dispatch_id: str, reason: str, by: str, force: bool) -> int:
    """Move a request into `<state>/withdrawn/` with a note saying who, when and why.
    Runs as the state folder's owner (cli drops root first)."""
    if not DISPATCH_ID_RE.match(dispatch_id):
        err(f"{dispatch_id!r}: not a dispatch id (dispatch-<ts>-<type>-<hash>)")
        return EXIT_USAGE
    if not reason.strip():
        err("--reason TEXT is required")
        return EXIT_USAGE
    source = request_path(config, dispatch_id)
    doc = read_json_quiet(source)
    if request_facts(doc) is None:
        err(f"no request {dispatch_id} in {config.requests_dir}")
        return EXIT_RUNTIME
    if os.path.lexists(approval_marker(config, dispatch_id)) and not force:
        err(f"{dispatch_id}: approved; the consumer may act on it already (--force)")
        return EXIT_RUNTIME
    archive = withdrawn_dir(config)
    os.makedirs(archive, mode=0o750, exist_ok=True)
    target = os.path.join(archive, dispatch_id + ".json")
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copyfile(source, target)  # another file system: copy, then take it away
        os.unlink(source)
    fsync_dir(config.requests_dir)
    note = {
        "dispatch_id": dispatch_id,
        "withdrawn_by": by,
        "withdrawn_at": iso_ts(time.time()),
        "reason": reason,
    }
    path = os.path.join(archive, dispatch_id + ".withdrawn.json")
    write_file_durably(path, (json.dumps(note, indent=2, sort_keys=True) + "\n").encode())
    _log(
        config,
        "withdrawn",
        level="WARNING",
        dispatch_id=dispatch_id,
        decision_id=(doc or {}).get("source_decision_id"),
        reason=reason,
        withdrawn_by=by,
        file=target,
    )
    print(f"withdrew {dispatch_id} -> {target}")
    return EXIT_OK
