"""The durable-write protocol observed from outside: a process run under Debian's `strace -f`
(paths of descriptors decoded with -y), its file system calls parsed, and the order of each
durable write checked: temp file created -> written -> fsync'ed (or the folder's file
system syncfs'ed) -> renamed onto its name -> the folder fsync'ed before the process
writes, renames or syncs anything else.

Used by tests/daemon/test_write_protocol.py and tests/runner/test_runner_write_protocol.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

import pytest

STRACE = shutil.which("strace")


def _strace_works() -> bool:
    """strace is installed and may trace here (a container without ptrace may not)."""
    if STRACE is None:
        return False
    probe = [STRACE, "-f", "-qq", "--seccomp-bpf", "-e", "trace=openat", "-o", os.devnull, "true"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_strace = pytest.mark.skipif(
    not _strace_works(),
    reason="strace missing or not allowed to trace (make venv installs it: "
    "scripts/system-test-deps.sh)",
)

SYSCALLS = (
    "open,openat,creat,write,pwrite64,writev,fsync,fdatasync,syncfs,"
    "rename,renameat,renameat2,unlink,unlinkat"
)


def strace_argv(out: str) -> list[str]:
    """The prefix that runs a command under strace, following every child and thread
    (-f), descriptors shown with their path (-y), one line per call in `out`. Only the
    traced calls stop the process (--seccomp-bpf), so a traced run costs little more."""
    assert STRACE is not None
    return [STRACE, "-f", "-qq", "-y", "--seccomp-bpf", "-e", f"trace={SYSCALLS}", "-o", out]


@dataclass(frozen=True)
class Call:
    index: int  # position in the trace (the order the calls returned)
    pid: int
    name: str
    fd_path: str  # the path of the first argument when it is a descriptor (-y), else ""
    paths: tuple[str, ...]  # the quoted path arguments
    flags: str  # open flags ("" for other calls)
    result: str  # the return value as printed ("6</path>", "0", "-1 ENOENT ...")

    @property
    def ok(self) -> bool:
        return not self.result.startswith("-1")

    @property
    def result_path(self) -> str:
        """The path of the descriptor an open returned."""
        match = re.match(r"\d+<(.*)>$", self.result)
        return match.group(1) if match else ""

    @property
    def written(self) -> int:
        return int(self.result) if self.result.isdigit() else 0


_LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(.*?)\s*$")
_FD_ARG = re.compile(r"^(?:-?\d+|AT_FDCWD)<([^>]*)>")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _unescape(text: str) -> str:
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


def parse_trace(text: str) -> list[Call]:
    """strace -f -y lines -> calls, in the order they returned. A call another thread
    interrupted (`<unfinished ...>`, later `<... name resumed>`) is joined into one."""
    pending: dict[tuple[int, str], str] = {}
    calls: list[Call] = []
    for raw in text.splitlines():
        unfinished = re.match(r"^(\d+)\s+(\w+)\((.*) <unfinished \.\.\.>$", raw)
        if unfinished:
            pending[(int(unfinished.group(1)), unfinished.group(2))] = unfinished.group(3)
            continue
        resumed = re.match(r"^(\d+)\s+<\.\.\. (\w+) resumed>(.*)$", raw)
        if resumed:
            pid, name = int(resumed.group(1)), resumed.group(2)
            raw = f"{pid} {name}({pending.pop((pid, name), '')}{resumed.group(3)}"
        match = _LINE.match(raw)
        if not match:
            continue
        pid, name, args, result = (
            int(match.group(1)),
            match.group(2),
            match.group(3),
            match.group(4),
        )
        fd = _FD_ARG.match(args)
        fd_path = _unescape(fd.group(1)) if fd and not args.startswith("AT_FDCWD") else ""
        # The quoted strings of an open, rename or unlink are paths; of a write, data.
        quoted = () if name in ("write", "pwrite64", "writev") else _QUOTED.findall(args)
        paths = tuple(_unescape(q) for q in quoted)
        flags = ""
        if name in ("open", "openat", "creat"):
            flag_match = re.search(r'",\s*([A-Z_|]+)', args)
            flags = flag_match.group(1) if flag_match else ""
            if name == "creat":
                flags = "O_CREAT|O_WRONLY|O_TRUNC"
        calls.append(Call(len(calls), pid, name, fd_path, paths, flags, result))
    return calls


def _is_sync(call: Call) -> bool:
    return call.name in ("fsync", "fdatasync", "syncfs")


def _writes_something(call: Call) -> bool:
    """A call that changes or syncs a file: what may not come between a rename and the
    fsync of its folder."""
    if call.name in ("open", "openat", "creat"):
        return any(f in call.flags for f in ("O_WRONLY", "O_RDWR", "O_CREAT"))
    if (call.fd_path or "").startswith(("pipe:", "socket:")):
        # Not a file: a log line to a stderr pipe, or the byte Python's C signal handler
        # writes to its wake-up pipe whenever a signal arrives (any time, even here).
        return False
    return call.name in (
        "write",
        "pwrite64",
        "writev",
        "fsync",
        "fdatasync",
        "syncfs",
        "rename",
        "renameat",
        "renameat2",
        "unlink",
        "unlinkat",
    )


@dataclass(frozen=True)
class DurableWrite:
    """One file put in place by rename, with the calls that made it durable."""

    target: str
    temp: str
    created: int  # index of the open that created the temp file
    last_write: int  # index of the last write to it
    synced: int  # index of the fsync of the temp file (or of the syncfs)
    renamed: int  # index of the rename onto target
    folder_synced: int  # index of the fsync of target's folder
    size: int  # bytes written to the temp file


class ProtocolBroken(AssertionError):
    pass


def renames_onto(calls: list[Call], target: str) -> list[Call]:
    return [
        c
        for c in calls
        if c.name.startswith("rename") and c.ok and len(c.paths) >= 2 and c.paths[-1] == target
    ]


def durable_writes(calls: list[Call], target: str) -> list[DurableWrite]:
    """Every rename onto `target` in the trace, each checked against the protocol: its temp
    file (same folder) created, written, synced, closed with nothing pending, renamed, and
    the folder fsync'ed before that process writes, renames or syncs anything else (other
    renames into the same folder, the rest of a batch, may come first). Raises
    ProtocolBroken naming the first step that is missing or out of order."""
    renames = renames_onto(calls, target)
    if not renames:
        raise ProtocolBroken(f"{target}: never renamed into place")
    folder = os.path.dirname(target)
    found = []
    for rename in renames:
        temp = rename.paths[-2]
        where = f"{target} (rename #{rename.index})"
        if os.path.dirname(temp) != folder:
            raise ProtocolBroken(f"{where}: temp file {temp} is not in the same folder")
        creates = [
            c
            for c in calls[: rename.index]
            if c.pid == rename.pid
            and c.name in ("open", "openat", "creat")
            and c.ok
            and c.paths
            and c.paths[0] == temp
            and "O_CREAT" in c.flags
        ]
        if not creates:
            raise ProtocolBroken(f"{where}: temp file {temp} was never created")
        created = creates[-1].index
        span = calls[created : rename.index]
        writes = [
            c for c in span if c.name in ("write", "pwrite64", "writev") and c.fd_path == temp
        ]
        if not writes or sum(c.written for c in writes) == 0:
            raise ProtocolBroken(f"{where}: nothing was written to {temp}")
        last_write = writes[-1].index
        syncs = [
            c
            for c in calls[last_write : rename.index]
            if c.pid == rename.pid
            and c.ok
            and (
                (c.name in ("fsync", "fdatasync") and c.fd_path == temp)
                or (c.name == "syncfs" and c.fd_path in (folder, temp))
            )
        ]
        if not syncs:
            raise ProtocolBroken(
                f"{where}: {temp} was not fsync'ed (nor its folder's file system syncfs'ed) "
                "between its last write and its rename"
            )
        after = [
            c
            for c in calls[rename.index + 1 :]
            if c.pid == rename.pid
            and _writes_something(c)
            and not (c.name.startswith("rename") and os.path.dirname(c.paths[-1]) == folder)
        ]
        first = after[0] if after else None
        if first is None or not (
            _is_sync(first) and first.name != "syncfs" and first.fd_path == folder
        ):
            seen = (
                f"{first.name}({first.fd_path or ', '.join(first.paths)})" if first else "the end"
            )
            raise ProtocolBroken(
                f"{where}: the folder {folder} was not fsync'ed right after the rename; "
                f"the next write-side call was {seen}"
            )
        found.append(
            DurableWrite(
                target,
                temp,
                created,
                last_write,
                syncs[-1].index,
                rename.index,
                first.index,
                sum(c.written for c in writes),
            )
        )
    return found


def first_write_to(calls: list[Call], path: str, start: int) -> Call | None:
    """The first write to `path` (a descriptor on it) at or after index `start`."""
    for c in calls[start:]:
        if c.name in ("write", "pwrite64", "writev") and c.fd_path == path:
            return c
    return None


def first_call(calls: list[Call], start: int, name: str, path: str) -> Call | None:
    for c in calls[start:]:
        if c.name == name and (c.fd_path == path or path in c.paths):
            return c
    return None
