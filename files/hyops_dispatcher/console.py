"""Text for a person's terminal: control characters escaped (`printable`) and the
one-line `dispatcher: ...` error on stderr.

Invariant: imports nothing of the package; nothing a person reads is printed raw.
"""

from __future__ import annotations

import re
import sys
from typing import Any, List, Optional, Sequence

CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(value: Any) -> str:
    """Text for a person's terminal: control characters (a newline that would forge a
    row, an ESC sequence) shown as \\xNN escapes, lone surrogates (a name that is not
    UTF-8, a \\ud800 in JSON) as \\uNNNN, which no terminal encoding refuses. Every
    human printer uses it."""
    return CONTROL_RE.sub(lambda m: _escape(m.group()), str(value))


def err(message: str) -> None:
    print(f"dispatcher: {printable(message)}", file=sys.stderr)


def age(seconds: Optional[float]) -> str:
    """A duration at a glance: `45s`, `5m`, `3h12m`, `2d3h`; `-` when unknown. Negative
    (in the future) keeps its sign."""
    if seconds is None:
        return "-"
    sign, s = ("-", -seconds) if seconds < 0 else ("", seconds)
    s = int(s)
    if s < 60:
        text = f"{s}s"
    elif s < 3600:
        text = f"{s // 60}m"
    elif s < 86400:
        text = f"{s // 3600}h{s % 3600 // 60}m" if s % 3600 // 60 else f"{s // 3600}h"
    else:
        text = f"{s // 86400}d{s % 86400 // 3600}h" if s % 86400 // 3600 else f"{s // 86400}d"
    return sign + text


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> List[str]:
    """Aligned columns under a header, every cell `printable`; the last column is not
    padded."""
    cells = [[printable(c if c is not None else "-") for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(values: Sequence[str]) -> str:
        padded = [v.ljust(widths[i]) for i, v in enumerate(values[:-1])] + [values[-1]]
        return (indent + "  ".join(padded)).rstrip()

    return [line(list(headers))] + [line(row) for row in cells]
