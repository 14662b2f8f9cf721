"""``hyops``: apply, destroy, preflight and show HyOps module packages from this controller.

``main()`` only parses arguments and maps errors to exit codes (0 ok, 1 failure,
2 usage); the work happens in lifecycle.py and show.py.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence

from . import __version__, preflight, show
from .checks import run_preflight, run_validate
from .errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, HyopsError, InputError
from .fsutil import dump_json
from .lifecycle import Request, run_lifecycle
from .redact import scrub
from .runtime import Layout, check_instance_name, resolve_root

DESCRIPTION = """\
Run a HyOps module package (e.g. platform/network/decision-dispatcher) from this
controller, with the same runtime layout, inputs, evidence and state files as HybridOps.

  hyops validate  --env dev --module platform/network/decision-dispatcher --inputs FILE
  hyops preflight --env dev --module platform/network/decision-dispatcher --inputs FILE
  hyops plan      --env dev --module platform/network/decision-dispatcher --inputs FILE
  hyops apply     --env dev --module platform/network/decision-dispatcher --inputs FILE
  hyops show      --env dev --module platform/network/decision-dispatcher
  hyops destroy   --env dev --module platform/network/decision-dispatcher --inputs FILE
"""

EPILOG = """\
runtime root: --root DIR, else $HYOPS_RUNTIME_ROOT, else ~/.hybridops/envs/<--env or $HYOPS_ENV>
module:       <--module-root>/<ref>/spec.yml (default: this package's modules/ folder)
inputs:       module.yml defaults < --inputs FILE < $HYOPS_INPUTS_JSON < $HYOPS_INPUT_<a>__<b>
state:        <root>/state/modules/<module_id>/latest.json (check: jq '.status, .outputs' FILE)
evidence:     <root>/logs/module/<module_id>/<run_id>/ (ansible.log is the full log)
exit codes:   0 ok, 1 failure (inputs, preflight, playbook, state write), 2 usage
"""

COMMAND_HELP = {
    "apply": "validate inputs, check the hosts, run the apply playbook, publish outputs",
    "destroy": "run the destroy playbook; state becomes 'destroyed' with no outputs",
    "plan": "run the apply playbook in --check mode: nothing changes on the host or in state",
    "preflight": "check inputs, tools, runtime root and connectivity; write nothing",
    "show": "print the module state (latest.json, or an instance)",
    "validate": "check inputs, the manifest and the playbooks' syntax; write nothing",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyops",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hyops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in COMMAND_HELP.items():
        cmd = sub.add_parser(
            name,
            help=text,
            description=text,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.add_argument("--env", help="environment name; root ~/.hybridops/envs/ENV")
        cmd.add_argument("--root", help="runtime root folder (overrides --env and the environment)")
        cmd.add_argument(
            "--module",
            required=True,
            metavar="REF",
            help="module ref, e.g. platform/network/decision-dispatcher",
        )
        cmd.add_argument(
            "--state-instance",
            metavar="NAME",
            help="use state/modules/<id>/instances/NAME.json instead of latest.json",
        )
        cmd.add_argument(
            "--module-root",
            action="append",
            default=[],
            metavar="DIR",
            help="look for DIR/<ref>/spec.yml first (repeatable; then this package's modules/)",
        )
        if name in ("apply", "destroy", "plan"):
            cmd.add_argument(
                "--timeout",
                type=int,
                default=3600,
                metavar="SECONDS",
                help="stop ansible-playbook after this long and record an error (default 3600)",
            )
        if name != "show":
            cmd.add_argument(
                "--inputs", metavar="FILE", help="YAML inputs file (merged over module defaults)"
            )
        cmd.add_argument(
            "--json",
            action="store_true",
            help="print the result as JSON on stdout (progress goes to stderr)",
        )
    return parser


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM takes the same path as Ctrl-C: stop ansible-playbook, record status: error.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return _dispatch(args)
    except HyopsError as exc:
        return _fail(args, str(exc), exc.exit_code, exc if isinstance(exc, InputError) else None)
    except KeyboardInterrupt:
        return _fail(args, "hyops: interrupted", EXIT_FAILURE)
    except OSError as exc:
        # e.g. a state or evidence write on a full or read-only disk
        where = f": {exc.filename}" if exc.filename else ""
        return _fail(args, f"hyops: {exc.strerror or exc}{where}", EXIT_FAILURE)


def _fail(
    args: argparse.Namespace, message: str, code: int, problem: InputError | None = None
) -> int:
    """The one-line error on stderr and, with --json, a document on stdout as well."""
    print(scrub(message), file=sys.stderr)
    if getattr(args, "json", False):
        doc: dict[str, object] = {"ok": False, "exit_code": code, "error": message}
        if problem is not None:
            doc["input_problems"] = problem.problems
            doc["input_source"] = problem.source
        print(scrub(json.dumps(doc, indent=2)))
    return code


def _dispatch(args: argparse.Namespace) -> int:
    root = resolve_root(args.root, args.env)
    if args.state_instance:
        check_instance_name(args.state_instance)
    layout = Layout(root, args.module, args.state_instance)
    if args.command == "show":
        return show.show(layout, as_json=args.json)
    req = Request(
        command=args.command,
        module_ref=args.module,
        root=root,
        inputs_file=args.inputs,
        state_instance=args.state_instance,
        module_roots=list(args.module_root),
        environ=dict(os.environ),
        timeout_s=getattr(args, "timeout", None),
    )
    if args.command == "validate":
        return _print_checks(run_validate(req), None, args.json)
    if args.command == "preflight":
        checks, problem = run_preflight(req)
        return _print_checks(checks, problem, args.json)
    final = run_lifecycle(req, progress=sys.stderr if args.json else sys.stdout)
    if args.json:
        sys.stdout.write(dump_json(final))
    else:
        plan = args.command == "plan"
        where = f"{final['evidence_dir']}/ansible.log" if plan else layout.state_file
        print(f"hyops: {args.command} {final['status']}: {where}")
    return EXIT_OK


def _print_checks(checks: list[preflight.Check], problem: InputError | None, as_json: bool) -> int:
    """The check table (or its --json document); input problems name their source: the
    inputs file, or the HYOPS_INPUT_* variable they came from."""
    failed = any(c.status == "fail" for c in checks)
    problems = problem.problems if problem else []
    if as_json:
        checks_doc = [c.as_dict() for c in checks]
        doc = {"ok": not failed, "checks": checks_doc, "input_problems": problems}
        if problem:
            doc["input_source"] = problem.source
        print(scrub(json.dumps(doc, indent=2)))
    else:
        print(scrub(preflight.table(checks)))
        if problem:
            print(str(problem), file=sys.stderr)
    return EXIT_FAILURE if failed else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["EXIT_USAGE", "main"]
