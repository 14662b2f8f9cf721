"""Prove that every guarantee bites: apply each mutant of tests/mutants/mutants.toml to a
scratch copy of the repository, run only its named tests there with the project's venv,
and fail when any mutant survives (its tests all pass without the mechanism).

    python tests/mutants/run.py [--only ID[,ID...]] [--keep] [--no-baseline]

The copy holds the files git knows (tracked and untracked-not-ignored; never .venv), and
the copy's own `src/` and `files/` come first on PYTHONPATH, so the editable install of
the venv cannot make a test import the unmutated package. Bytecode is never written
(a mutant of the same size in the same second must not run a stale .pyc). Before the
mutants, the union of their tests runs once on the unmutated copy (the baseline): a test
that fails there would "kill" every mutant and prove nothing, and one that skips there
(no strace, not root) could kill none: either fails the run.

Prints one row per mutant (killed by which test, seconds) and the total time; exit 0 only
when every row is killed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TABLE = Path(__file__).resolve().with_name("mutants.toml")
TIMEOUT = 240  # seconds for one mutant's tests: a hang counts as killed, but is shown
FIELDS = {"id", "doc", "file", "search", "replace", "tests", "retarget"}


class TableError(Exception):
    """The table does not fit the code: a row's text is missing, doubled or malformed."""


@dataclass(frozen=True)
class Mutant:
    id: str
    doc: str
    file: str
    search: str
    replace: str
    tests: tuple[str, ...]
    retarget: str = ""


def load_table(path: Path = TABLE) -> list[Mutant]:
    rows = tomllib.loads(path.read_text(encoding="utf-8")).get("mutant", [])
    mutants, seen = [], set()
    for n, row in enumerate(rows, 1):
        where = f"{path.name} row {n} ({row.get('id', '?')})"
        unknown = set(row) - FIELDS
        missing = {"id", "doc", "file", "search", "replace", "tests"} - set(row)
        if unknown or missing:
            raise TableError(f"{where}: unknown keys {sorted(unknown)}, missing {sorted(missing)}")
        if row["id"] in seen:
            raise TableError(f"{where}: id used twice")
        seen.add(row["id"])
        if "\n" in row["search"] or "\n" in row["replace"]:
            raise TableError(f"{where}: search and replace are one line each")
        if row["search"] == row["replace"]:
            raise TableError(f"{where}: replace equals search (no mutation)")
        if row["doc"] not in ("DAEMON.md", "RUNNER.md"):
            raise TableError(f"{where}: doc must be DAEMON.md or RUNNER.md")
        if not row["tests"]:
            raise TableError(f"{where}: names no test")
        mutants.append(
            Mutant(
                row["id"],
                row["doc"],
                row["file"],
                row["search"],
                row["replace"],
                tuple(row["tests"]),
                row.get("retarget", ""),
            )
        )
    if not mutants:
        raise TableError(f"{path}: no [[mutant]] rows")
    return mutants


def check_against(mutant: Mutant, base: Path) -> str:
    """The file's text, after checking the row fits the tree at `base`; TableError when the
    search text is not found exactly once or a named test file does not exist."""
    target = base / mutant.file
    if not target.is_file():
        raise TableError(f"{mutant.id}: {mutant.file} does not exist")
    text = target.read_text(encoding="utf-8")
    count = text.count(mutant.search)
    if count != 1:
        raise TableError(
            f"{mutant.id}: search text found {count} times in {mutant.file} (must be exactly "
            f"once): {mutant.search!r}"
        )
    for test in mutant.tests:
        if not (base / test.split("::", 1)[0]).is_file():
            raise TableError(f"{mutant.id}: test file {test.split('::', 1)[0]} does not exist")
    return text


def repo_files(repo: Path) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    names = [n for n in out.split("\0") if n]
    return [n for n in names if not (n == ".venv" or n.startswith(".venv/"))]


def copy_repo(repo: Path, dest: Path) -> int:
    copied = 0
    for name in repo_files(repo):
        src, dst = repo / name, dest / name
        if not os.path.lexists(src):
            continue  # tracked but deleted in the worktree
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        elif src.is_file():
            shutil.copy2(src, dst)
        else:
            continue
        copied += 1
    return copied


def scratch_env(base: Path) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(base / "src"), str(base / "files")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PY_COLORS"] = "0"
    return env


def check_imports(base: Path, env: dict[str, str]) -> None:
    """Both packages must be imported from the scratch copy, not the editable install."""
    probe = (
        "import hyops_runner, hyops_dispatcher; "
        "print(hyops_runner.__file__); print(hyops_dispatcher.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=base, env=env, capture_output=True, text=True
    )
    files = out.stdout.split()
    if out.returncode != 0 or len(files) != 2 or not all(f.startswith(str(base)) for f in files):
        raise SystemExit(
            f"mutants: the scratch copy's packages are not the ones imported: {out.stdout}"
            f"{out.stderr}"
        )


def pytest_argv(tests: list[str] | tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]


FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


@dataclass
class Result:
    mutant: Mutant
    status: str  # killed, survived, error
    by: str
    seconds: float
    why: str = ""  # the first assertion line of the failure


def run_tests(tests: tuple[str, ...], base: Path, env: dict[str, str]) -> tuple[int, str]:
    try:
        done = subprocess.run(
            pytest_argv(tests),
            cwd=base,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return -1, ""
    return done.returncode, done.stdout + done.stderr


def run_mutant(mutant: Mutant, base: Path, env: dict[str, str]) -> Result:
    target = base / mutant.file
    original = check_against(mutant, base)
    mutated = original.replace(mutant.search, mutant.replace, 1)
    t0 = time.monotonic()
    try:
        if target.suffix == ".py":
            try:
                compile(mutated, str(target), "exec")
            except SyntaxError as exc:
                return Result(mutant, "error", f"the mutant does not compile: {exc}", 0.0)
        target.write_text(mutated, encoding="utf-8")
        rc, output = run_tests(mutant.tests, base, env)
    finally:
        target.write_text(original, encoding="utf-8")
    seconds = time.monotonic() - t0
    if rc == -1:
        return Result(mutant, "killed", f"(timeout after {TIMEOUT} s)", seconds)
    if rc == 0:
        return Result(mutant, "survived", "-", seconds)
    failed = FAILED.findall(output)
    if rc == 1 and failed:
        why = next((line[1:].strip() for line in output.splitlines() if line.startswith("E ")), "")
        return Result(mutant, "killed", failed[0], seconds, why)
    tail = " | ".join(output.strip().splitlines()[-3:])
    return Result(mutant, "error", f"pytest exit {rc}: {tail}", seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated mutant ids")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("-v", "--verbose", action="store_true", help="show why each died")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        mutants = load_table()
    except TableError as exc:
        print(f"mutants: {exc}", file=sys.stderr)
        return 2
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {m.id for m in mutants}
        if unknown:
            print(f"mutants: no such id: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        mutants = [m for m in mutants if m.id in wanted]
    scratch = Path(tempfile.mkdtemp(prefix="hyops-mutants-"))
    try:
        base = scratch / "repo"
        copied = copy_repo(REPO, base)
        env = scratch_env(base)
        check_imports(base, env)
        try:
            for mutant in mutants:
                check_against(mutant, base)
        except TableError as exc:
            print(f"mutants: {exc}", file=sys.stderr)
            return 2
        print(f"mutants: {len(mutants)} rows, scratch copy of {copied} files in {base}")
        if not args.no_baseline:
            union = list(dict.fromkeys(t for m in mutants for t in m.tests))
            t0 = time.monotonic()
            rc, output = run_tests(tuple(union), base, env)
            if rc != 0:
                print(output[-3000:])
                print(
                    f"mutants: the named tests fail WITHOUT any mutant (pytest exit {rc}); "
                    "fix them first",
                    file=sys.stderr,
                )
                return 1
            skipped = re.findall(r"^SKIPPED .*$", output, re.MULTILINE)
            if skipped:
                # A skipped test kills nothing: every named test must run here.
                print("\n".join(skipped))
                print("mutants: named tests skip on this host (see above)", file=sys.stderr)
                return 1
            passed = re.search(r"(\d+) passed", output)
            print(
                f"baseline: {passed.group(1) if passed else '?'} tests in {len(union)} paths "
                f"pass unmutated ({time.monotonic() - t0:.1f} s)"
            )
        results = []
        width = max(len(m.id) for m in mutants)
        print(f"| {'mutant':<{width}} | result   | killed by | seconds |")
        print(f"|{'-' * (width + 2)}|----------|-----------|---------|")
        for mutant in mutants:
            result = run_mutant(mutant, base, env)
            results.append(result)
            note = " (retarget)" if mutant.retarget else ""
            print(
                f"| {mutant.id:<{width}} | {result.status:<8} | {result.by}{note} | "
                f"{result.seconds:.1f} |",
                flush=True,
            )
            if args.verbose and result.why:
                print(f"|   {result.why[:160]}", flush=True)
    finally:
        if args.keep:
            print(f"mutants: scratch copy kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    bad = [r for r in results if r.status != "killed"]
    total = time.monotonic() - started
    killed = len(results) - len(bad)
    print(f"mutants: {killed}/{len(results)} killed in {total:.1f} s")
    for r in bad:
        print(f"mutants: {r.mutant.id} {r.status.upper()}: {r.by}", file=sys.stderr)
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
