"""The command line: arguments, the config loaded once, dropping root, and dispatch to the
commands.

Invariant: the only module that parses argv; `main()` wires things up and returns an exit
code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import stat
import sys
import time
from typing import Callable, List, Optional, Tuple

from .approve import cmd_approve, cmd_withdraw
from .completion import bash_script
from .config import Config, ConfigError, load_config
from .console import err
from .ctl import cmd_check_config, cmd_explain, cmd_list, cmd_pending, cmd_replay, cmd_status
from .daemon import start_daemon
from .handoff import cmd_validate_handoff
from .host import Locked
from .jsonlog import JournalLines, journal_stream, open_log
from .release import running
from .runconfig import load_running_config, running_copy_path
from .states import (
    APPROVAL_STATES,
    DEFAULT_CONFIG_PATH,
    EXIT_CONFIG,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_USAGE,
)

# Commands that only read: with an invalid file on disk they use the running config.
READ_COMMANDS = ("status", "list", "explain", "validate-handoff", "pending")


def _load_or_exit(path: str, command: str) -> Tuple[Config, Optional[str]]:
    """The config, and why the file on disk was not used (None when it was)."""
    try:
        return load_config(path), None
    except ConfigError as exc:
        problem = str(exc)
        running_config = load_running_config(path) if command in READ_COMMANDS else None
        if running_config is None:
            err(problem)
            raise SystemExit(EXIT_CONFIG) from None
    err(
        f"{problem}; the file on disk is invalid, using the running config "
        f"(digest {running_config.digest}, {running_copy_path(running_config)})"
    )
    return running_config, problem


def _use_inotify() -> bool:
    return os.environ.get("HYOPS_DISPATCHER_NO_INOTIFY", "") not in ("1", "true", "yes")


def cmd_run(config: Config, once: bool) -> int:
    try:
        log = open_log(config, rotate=not once)  # only the service rotates its log
    except OSError as exc:
        err(f"cannot open log {config.log_file}: {exc.strerror or exc}")
        return EXIT_RUNTIME
    try:
        daemon = start_daemon(
            config, log, use_inotify=_use_inotify() and not once, command="once" if once else "run"
        )
    except Locked:
        err(f"another dispatcher already runs on this root (lock {config.lock_file} is held)")
        return EXIT_LOCKED
    except (OSError, sqlite3.Error) as exc:
        err(f"cannot start: {exc}")
        log.event("error", level="ERROR", reason=f"cannot start: {exc}")
        return EXIT_RUNTIME
    try:
        if once:
            daemon.scan(full=True)
            daemon.prune()
            daemon.answer_replays()
            daemon.report.set_status("stopped")
            daemon.write_state(force=True)
            daemon.stop()
        else:
            daemon.run_forever()
    except (OSError, sqlite3.Error) as exc:
        # Disk full, folder removed under us...: exit non-zero so systemd restarts us.
        err(f"runtime failure: {exc}")
        log.event("error", level="ERROR", reason=f"runtime failure: {exc}")
        daemon.stop()
        return EXIT_RUNTIME
    finally:
        log.close()
    return EXIT_OK


HELP_EPILOG = """\
exit codes:
  0  ok (status: healthy)
  1  runtime failure (cannot start, disk error, 'status' cannot read state.json)
  2  usage error
  3  invalid config (systemd does not restart on this one: fix the config first)
  4  another dispatcher already runs on this root (the lock is held)
  5  validate-handoff failed
  6  status: no daemon runs (crashed or stopped)
  7  status: a daemon runs but is not healthy (degraded, starting, stopping)

signals (while 'run'): SIGTERM/SIGINT finish the write in hand and exit; SIGHUP reloads
the config (a bad new config is refused and the old one kept); SIGUSR1 runs a check of the
records folder now instead of at the next poll.
Environment: HYOPS_DISPATCHER_NO_INOTIFY=1 turns inotify off (polling only).
"""


EXAMPLES = {
    "version": ("", "--json"),
    "completion": ("bash > /usr/share/bash-completion/completions/hyops-dispatcher",),
    "run": ("--config /opt/hybridops/decision-dispatcher/config/config.json",),
    "once": ("",),
    "check-config": ("--config /tmp/new-config.json",),
    "status": ("", "--json | jq .healthy", "; echo $?   # 0 healthy, 6 not running, 7 degraded"),
    "list": ("", "--json"),
    "pending": ("", "--json"),
    "explain": ("decision-20260921T141000Z-cutover-0c1d2e3f", "/tmp/draft-record.json"),
    "validate-handoff": ("", "--decision-type failback --timeout 60"),
    "replay": (
        "decision-20260921T141000Z-cutover-0c1d2e3f",
        "decision-20260921T141000Z-cutover-0c1d2e3f --yes   # after reading why it asked",
    ),
    "approve": (
        "dispatch-20260921T141000Z-cutover-0c1d2e3f --by alice --note 'INC-42, lag confirmed'",
    ),
    "withdraw": ("dispatch-20260921T141000Z-cutover-0c1d2e3f --reason 'false alarm'",),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dispatcher.py",
        description=(
            "hyops decision dispatcher: watches the decision records folder and writes one\n"
            "dispatch request per decision into <root>/state/requests/. A request waits for\n"
            "approval when the route or the config asks for it. It never runs anything\n"
            "itself (record-only). Every record gets an outcome: emitted, coalesced, stale,\n"
            "skipped, duplicate, unrouted, rejected or pending ('list' shows them)."
        ),
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG_PATH,
        metavar="PATH",
        help=f"config file (default {DEFAULT_CONFIG_PATH}); paths it does not "
        "name are placed under the folder above config/",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"hyops-decision-dispatcher {running()['release']}",
        help="print the version and the digest of this code, and exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "version",
        help="print the version and the digest of this code (no config needed)",
        description="The release this code is: version, digest of its sources, folder.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser(
        "completion",
        help="print the bash completion script (no config needed)",
        description="A bash completion script for the commands and flags of this parser; "
        "the role installs it next to the short command.",
    )
    p.add_argument("shell", choices=("bash",), help="the shell (bash)")
    p.add_argument(
        "--prog",
        default="hyops-dispatcher",
        metavar="NAME",
        help="the command it completes, besides dispatcher.py (default hyops-dispatcher)",
    )
    sub.add_parser(
        "run",
        help="run the daemon in the foreground (systemd runs this)",
        description="Watch the records folder and write requests until stopped.",
    )
    sub.add_parser(
        "once",
        help="look at the records folder once, write any requests, exit",
        description="One full pass over the records folder, then exit. Refuses to "
        "run while the daemon runs (exit 4).",
    )
    sub.add_parser(
        "check-config",
        help="check the config file and exit (0 ok, 3 invalid)",
        description="Validate the config; print one line naming the bad key.",
    )
    p = sub.add_parser(
        "status",
        help="show whether the daemon runs and is healthy",
        description="Read state.json and the lock: running, healthy, counters, last request.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--watch", type=float, default=0, metavar="S", help="print again every S s")
    p = sub.add_parser(
        "list",
        help="list the requests and every record that was not dispatched",
        description="Requests in the requests folder, then records that were "
        "rejected, pending, unrouted, stale, skipped, duplicate or "
        "coalesced, with the reason.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--watch", type=float, default=0, metavar="S", help="print again every S s")
    p.add_argument(
        "--state",
        choices=(*APPROVAL_STATES, "withdrawn"),
        default=None,
        help="only requests in this approval state",
    )
    p.add_argument("--route", default=None, metavar="ROUTE", help="only requests of this route")
    p = sub.add_parser(
        "explain",
        help="show what the dispatcher would do with one record (writes nothing)",
        description="Which route a record takes, which request it would give, "
        "and what the ledger says about it. Nothing is written.",
    )
    p.add_argument(
        "record",
        metavar="RECORD",
        help="a record file path, a file name in the records folder, or a decision_id",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    p = sub.add_parser(
        "validate-handoff",
        help="end-to-end check: write a synthetic record, wait for its request, "
        "check it, remove both",
        description="Writes a synthetic record into the records folder (needs "
        "write access there, e.g. root), waits for the running daemon "
        "to write its request, checks status and target, removes the "
        "record and the request and prints a JSON verdict. Exit 5 "
        "when any check fails.",
    )
    p.add_argument(
        "--decision-type",
        default=None,
        metavar="T",
        help="decision type to use (default: cutover if routed, else the first route)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for the request (default 30)",
    )
    p.add_argument("--json", action="store_true", help="print the JSON verdict, not the table")
    p = sub.add_parser(
        "pending",
        help="the requests waiting for a person, oldest first (what the on-call runs)",
        description="Requests whose approval state is awaiting, oldest first.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser(
        "approve",
        help="approve a request: write the consumer's marker, with who and why",
        description="Write <approvals_dir>/<DISPATCH_ID>.approved.json (approved_by, "
        "approved_at, note) as the folder's owner and log 'approved'. Refuses a "
        "superseded, expired, withdrawn or synthetic request unless --force.",
    )
    p.add_argument("dispatch_id", metavar="DISPATCH_ID")
    p.add_argument("--by", required=True, metavar="NAME", help="who approves (recorded)")
    p.add_argument("--note", default="", metavar="TEXT", help="why (recorded)")
    p.add_argument("--force", action="store_true", help="approve a request that is not awaiting")
    p = sub.add_parser(
        "withdraw",
        help="take a request away from the consumer (into state/withdrawn/), with a reason",
        description="Move the request into <state>/withdrawn/ with a note (who, when, "
        "why) and log 'withdrawn'. list, status and replay show it as withdrawn.",
    )
    p.add_argument("dispatch_id", metavar="DISPATCH_ID")
    p.add_argument("--reason", required=True, metavar="TEXT", help="why (recorded)")
    p.add_argument("--by", default="", metavar="NAME", help="who (default: $SUDO_USER/$USER)")
    p.add_argument("--force", action="store_true", help="withdraw an approved request too")
    p = sub.add_parser(
        "replay",
        help="dispatch a decision that was stale, skipped, unrouted or coalesced",
        description="Write the request for a decision the rules held back (the "
        "route must exist). Refuses a decision that already has a "
        "request. A decision older than the latest request of another route, or "
        "while a request of an opposite route (supersedes) awaits approval, is "
        "refused in one line saying so unless --yes.",
    )
    p.add_argument(
        "--yes",
        action="store_true",
        help="replay even though it is older than another route's latest request "
        "or an opposite request awaits approval",
    )
    p.add_argument("decision_id", metavar="DECISION_ID")
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for the running daemon's answer (default 30)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    # --config also after the subcommand (`status --config PATH`); an example for each.
    for name, choice in sub.choices.items():
        if name in EXAMPLES:
            choice.epilog = "examples:\n" + "\n".join(
                f"  dispatcher.py {name}{' ' if line else ''}{line}" for line in EXAMPLES[name]
            )
            choice.formatter_class = argparse.RawDescriptionHelpFormatter
        choice.add_argument(
            "--config", default=argparse.SUPPRESS, metavar="PATH", help="config file"
        )
    return parser


def drop_root(config: Config) -> None:
    """Run as root, a command drops to the owner of the state folder (the service user)
    before it opens any file there: it then cannot be made to follow a symlink or fill a
    file that user planted, and every file it creates is one the service can open. A
    state folder that others may write to is refused. Raises SystemExit(EXIT_RUNTIME)."""
    if os.geteuid() != 0:
        return
    folder = os.path.dirname(config.state_file)
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        return  # nothing of the service's yet (the role creates it owned by the service)
    if not stat.S_ISDIR(st.st_mode) or st.st_mode & 0o022:
        err(
            f"state folder {folder} is not a folder only its owner may write to "
            f"(mode {stat.filemode(st.st_mode)}); refusing to run as root there (chmod 0750)"
        )
        raise SystemExit(EXIT_RUNTIME)
    if st.st_uid == 0:
        return
    gid, groups = st.st_gid, [st.st_gid]
    try:
        import pwd  # only needed here

        entry = pwd.getpwuid(st.st_uid)
        gid = entry.pw_gid
        groups = os.getgrouplist(entry.pw_name, gid)
    except (KeyError, OSError):
        pass  # a uid without a passwd entry: its folder's group only
    try:
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(st.st_uid)
    except OSError as exc:
        err(f"cannot drop root to uid {st.st_uid}, the owner of {folder}: {exc.strerror}")
        raise SystemExit(EXIT_RUNTIME) from None


def cmd_version(as_json: bool) -> int:
    code = running()
    if as_json:
        print(json.dumps(code, sort_keys=True))
    else:
        print(
            f"hyops-decision-dispatcher {code['release']} (python {code['python']}, {code['path']})"
        )
    return EXIT_OK


def watch(seconds: float, show: Callable[[], int]) -> int:
    """Once, or every `seconds` until interrupted (the screen cleared on a terminal)."""
    if seconds <= 0:
        return show()
    try:
        while True:
            if sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            show()
            sys.stdout.flush()
            time.sleep(max(0.2, seconds))
    except KeyboardInterrupt:
        return EXIT_OK


def main(argv: Optional[List[str]] = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # `list | head`: the reader went away; say nothing, and let no flush at exit fail.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _main(argv: Optional[List[str]] = None) -> int:
    if journal_stream() and not isinstance(sys.stderr, JournalLines):
        # Under systemd: the one-line errors (and usage errors) are errors for journald;
        # the event log prefixes each of its own lines with its level's priority.
        sys.stderr = JournalLines(sys.stderr, 3)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:  # no arguments: help, never a daemon by surprise (the unit says run)
        parser.print_help()
        return EXIT_USAGE
    command = args.command
    if command == "version":
        return cmd_version(args.json)
    if command == "completion":
        print(bash_script(parser, (args.prog, "dispatcher.py")), end="")
        return EXIT_OK
    try:
        # the one load; every command gets this Config
        config, disk_problem = _load_or_exit(args.config, command)
        if command not in ("check-config", "validate-handoff", "approve"):
            # validate-handoff writes its synthetic record as root; it only reads state/
            # (with open_own_file's checks).
            drop_root(config)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if command in ("run", "once"):
            return cmd_run(config, once=command == "once")
        if command == "check-config":
            return cmd_check_config(config)
        if command == "status":
            return watch(args.watch, lambda: cmd_status(config, args.json, disk_problem))
        if command == "list":
            return watch(args.watch, lambda: cmd_list(config, args.json, args.state, args.route))
        if command == "explain":
            return cmd_explain(config, args.record)
        if command == "validate-handoff":
            return cmd_validate_handoff(config, args.decision_type, args.timeout, args.json)
        if command == "pending":
            return cmd_pending(config, args.json)
        if command == "approve":
            return cmd_approve(
                config, args.dispatch_id, args.by, args.note, args.force, lambda: drop_root(config)
            )
        if command == "withdraw":
            by = (
                args.by or os.environ.get("SUDO_USER") or os.environ.get("USER") or str(os.getuid())
            )
            return cmd_withdraw(config, args.dispatch_id, args.reason, by, args.force)
        if command == "replay":
            return cmd_replay(config, args.decision_id, args.timeout, args.yes)
    except SystemExit as exc:
        return int(exc.code or 0)
    except BrokenPipeError:
        raise  # main() keeps a closed pipe quiet
    except (OSError, sqlite3.Error) as exc:
        err(f"{command}: {exc}")
        return EXIT_RUNTIME
    return EXIT_USAGE
