"""The operator's terminal (issue 16): colour only on a TTY and never with NO_COLOR; bash
completion generated from the parser; `--watch` refreshes until SIGINT, then exits 0
quietly. Real CLI processes: a pseudo-terminal, a pipe, a real bash, real signals."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time

from .conftest import DISPATCHER, Root, cli, cli_env, record, wait_for
from .request_seed import request_doc, seed_request

PY = sys.executable
ESC = "\x1b["


def _on_a_tty(root: Root, *args: str, env: dict[str, str] | None = None) -> str:
    """The command's stdout when it is a terminal (a pty), read to the end."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [PY, str(DISPATCHER), "--config", str(root.config), *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=cli_env(env),
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    proc.wait(60)
    return b"".join(chunks).decode(errors="replace")


def _seed(root: Root, tmp_path) -> None:
    (tmp_path / "approvals").mkdir(exist_ok=True)
    root.write_config(approvals_dir=str(tmp_path / "approvals"))
    seed_request(root, request_doc("dec-colour", "cutover", time.time() - 600, ttl=86400))


def test_colour_on_a_tty_only_and_never_with_no_color(root: Root, tmp_path) -> None:
    _seed(root, tmp_path)
    for command in ("list", "status"):
        tty = _on_a_tty(root, command, env={"NO_COLOR": "", "TERM": "xterm"})
        assert ESC in tty, f"{command} on a tty: {tty!r}"
        assert "awaiting" in tty or "NO" in tty, tty
        piped = subprocess.run(
            [PY, str(DISPATCHER), "--config", str(root.config), command],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in cli_env().items() if k != "NO_COLOR"},
        ).stdout
        assert ESC not in piped, f"{command} on a pipe: {piped!r}"
        plain = _on_a_tty(root, command, env={"NO_COLOR": "1", "TERM": "xterm"})
        assert ESC not in plain, f"{command} with NO_COLOR: {plain!r}"
        assert "awaiting" in plain or "NO" in plain, plain


def _complete(script: str, *words: str) -> list[str]:
    """COMPREPLY of the generated function for the command line `words` (cursor on the
    last word), in a real bash."""
    line = " ".join(f"'{w}'" if w else "''" for w in words)
    program = (
        f"{script}\n"
        f"COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
        'COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}; '
        "func=$(complete -p hyops-dispatcher | sed -E 's/.* -F ([^ ]+) .*/\\1/'); "
        '"$func" hyops-dispatcher "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"; '
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return [w for w in result.stdout.splitlines() if w]


def test_bash_completion_comes_from_the_parser(root: Root) -> None:
    result = cli(PY, root, "completion", "bash")
    assert result.returncode == 0, result.stderr
    script = result.stdout
    assert "complete " in script and "hyops-dispatcher" in script
    # needs no config: the role generates it before any config exists
    bare = subprocess.run(
        [PY, str(DISPATCHER), "--config", "/nonexistent/config.json", "completion", "bash"],
        capture_output=True,
        text=True,
        timeout=30,
        env=cli_env(),
    )
    assert bare.returncode == 0 and bare.stdout == script, bare.stderr

    commands = _complete(script, "hyops-dispatcher", "")
    for name in ("status", "list", "approve", "withdraw", "replay", "completion", "pending"):
        assert name in commands, commands
    assert "--config" in _complete(script, "hyops-dispatcher", "--")
    assert _complete(script, "hyops-dispatcher", "st") == ["status"]
    flags = _complete(script, "hyops-dispatcher", "list", "--")
    for flag in ("--json", "--watch", "--state", "--route", "--config"):
        assert flag in flags, flags
    assert "--by" not in flags, flags  # approve's, not list's
    assert set(_complete(script, "hyops-dispatcher", "approve", "--")) >= {"--by", "--note"}
    assert "--yes" in _complete(script, "hyops-dispatcher", "replay", "--")
    # an option with choices offers them; flags after other words still complete
    assert "awaiting" in _complete(script, "hyops-dispatcher", "list", "--state", "")
    assert "--json" in _complete(script, "hyops-dispatcher", "--config", "/x", "status", "--j")


def _watch(root: Root, command: str, change, seen_change) -> None:
    """Run `COMMAND --watch 0.2` with stdout on a pipe; after two refreshes make a change,
    wait until a refresh shows it, then SIGINT: exit 0 and no traceback."""
    proc = subprocess.Popen(
        [PY, str(DISPATCHER), "--config", str(root.config), command, "--watch", "0.2"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env({"NO_COLOR": "1"}),
    )
    out = b""
    try:
        marker = b"healthy:" if command == "status" else b"requests in "

        def read_more(predicate) -> bool:
            nonlocal out
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                out += os.read(proc.stdout.fileno(), 65536)
            return predicate(out.decode(errors="replace"))

        wait_for(lambda: read_more(lambda t: t.count(marker.decode()) >= 2), 20, "2 refreshes")
        before = out.decode()
        assert not seen_change(before), before
        change()
        wait_for(lambda: read_more(seen_change), 20, f"a {command} refresh showing the change")
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(20)
        _rest, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert rc == 0, err
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err, err


def test_status_watch_refreshes_until_sigint(root: Root, tmp_path, spawn) -> None:
    (tmp_path / "approvals").mkdir()
    root.write_config(approvals_dir=str(tmp_path / "approvals"))
    daemon = spawn(PY, root).wait_ready()
    wait_for(lambda: root.state().get("status") == "running", 10, "running")
    _watch(
        root,
        "status",
        lambda: root.drop("w.json", record("watch-status")),
        lambda text: "watch-status" in text,  # last_decision_id of a later refresh
    )
    assert daemon.stop() == 0


def test_list_watch_refreshes_until_sigint(root: Root, tmp_path) -> None:
    (tmp_path / "approvals").mkdir()
    root.write_config(approvals_dir=str(tmp_path / "approvals"))
    seed_request(root, request_doc("dec-watch-1", "cutover", time.time() - 60))
    _watch(
        root,
        "list",
        lambda: seed_request(root, request_doc("dec-watch-2", "cutover", time.time() - 30)),
        lambda text: "dec-watch-2" in text,
    )
