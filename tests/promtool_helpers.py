"""promtool and the Prometheus text format, for tests of rules and of metrics files.

`check_metrics(text)` is what tests call on a metrics file (the reference fixture now, files
the daemon wrote later): promtool's own lint (`promtool check metrics`) plus the rules
node_exporter's textfile collector adds and promtool does not check (no duplicate series,
no client-side timestamps, one block per metric family). A missing promtool fails the test
with the command that installs it; nothing is skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field

import pytest

INSTALL_HINT = (
    "promtool not found on PATH: run `make promtool` (scripts/ensure-promtool.sh installs "
    "Debian's prometheus package for it and leaves the server disabled)"
)

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE_RE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})?[ \t]+(\S+)(?:[ \t]+(\S+))?[ \t]*$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
# Sample names that belong to the family without the suffix (summaries, histograms).
_SUFFIXES = ("_bucket", "_sum", "_count")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return path


def run_promtool(
    *args: str, stdin: str | None = None, merge_stderr: bool = False
) -> subprocess.CompletedProcess[str]:
    """promtool ARGS; merge_stderr keeps its report in order (it splits it over both)."""
    return subprocess.run(
        [promtool(), *args],
        input=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
        timeout=120,
    )


@dataclass
class Metrics:
    """A parsed text-format file: TYPE and HELP per family, value per series."""

    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def series(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {lab: v for (n, lab), v in self.samples.items() if n == name}


def _family(name: str, types: dict[str, str]) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in types:
            return name[: -len(suffix)]
    return name


def _labels(text: str, where: str) -> frozenset[tuple[str, str]]:
    found: dict[str, str] = {}
    pos = 0
    while pos < len(text.rstrip()):
        m = _LABEL_RE.match(text, pos)
        if not m:
            raise ValueError(f"{where}: cannot parse labels {text!r}")
        if m.group(1) in found:
            raise ValueError(f"{where}: label {m.group(1)} given twice")
        found[m.group(1)] = re.sub(r"\\.", lambda e: _UNESCAPE.get(e.group(0), "?"), m.group(2))
        pos = m.end()
    return frozenset(found.items())


def parse_metrics(text: str) -> Metrics:
    """Parse the text format strictly; ValueError names the line of the first problem."""
    out = Metrics()
    finished: set[str] = set()
    current = ""
    for number, line in enumerate(text.splitlines(), 1):
        where = f"line {number}"
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if name != current:
                    if name in finished or name in out.types:
                        raise ValueError(f"{where}: metric family {name} appears twice")
                    finished.add(current)
                    current = name
                target = out.helps if parts[1] == "HELP" else out.types
                target[name] = parts[3] if len(parts) > 3 else ""
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            raise ValueError(f"{where}: not a sample line: {line!r}")
        name, label_text, value, timestamp = m.groups()
        if timestamp is not None:
            raise ValueError(
                f"{where}: {name} has a timestamp; node_exporter's textfile collector "
                "skips the whole file then"
            )
        family = _family(name, out.types)
        if family != current:
            if family in finished:
                raise ValueError(f"{where}: samples of {family} are not in one block")
            finished.add(current)
            current = family
        key = (name, _labels(label_text or "", where))
        if key in out.samples:
            raise ValueError(f"{where}: duplicate series {name}{{{label_text or ''}}}")
        try:
            out.samples[key] = float(value)
        except ValueError:
            raise ValueError(f"{where}: {name}: value {value!r} is not a number") from None
    return out


def check_metrics(text: str) -> list[str]:
    """Problems a scrape of this file would have; [] when clean."""
    problems: list[str] = []
    result = run_promtool("check", "metrics", stdin=text)
    if result.returncode != 0:
        lines = (result.stdout + result.stderr).strip().splitlines()
        problems.extend(f"promtool: {line}" for line in lines or [f"exit {result.returncode}"])
    try:
        parse_metrics(text)
    except ValueError as exc:
        problems.append(f"textfile: {exc}")
    return problems
