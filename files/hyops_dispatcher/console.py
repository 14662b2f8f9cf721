"""Text for a person's terminal: control characters escaped (`printable`), the one-line
`dispatcher: ...` error on stderr, and a little colour for states, on a terminal only.

Invariant: imports nothing of the package; nothing a person reads is printed raw.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Callable, List, Optional, Sequence

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


# SGR colours of the words a person looks for first; any other word stays plain.
COLOURS = {
    "yes": "32",  # green
    "running": "32",
    "approved": "32",
    "awaiting": "33",  # yellow: a person is needed
    "degraded": "33",
    "rejected": "33",
    "unrouted": "33",
    "stale": "33",
    "starting": "33",
    "stopping": "33",
    "NO": "1;31",  # bold red
    "crashed": "1;31",
    "stopped": "31",
    "expired": "31",
    "superseded": "2",  # dim: nothing to do
    "withdrawn": "2",
    "not-required": "2",
}


def colour_on(stream: Any = None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (non-empty,
    no-color.org) or TERM is dumb."""
    stream = sys.stdout if stream is None else stream
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def paint(word: str, text: Optional[str] = None) -> str:
    """`text` (default `word`) in the colour of `word` when colour is on, else as is.
    `text` must already be printable; the escape sequence is ours."""
    text = word if text is None else text
    code = COLOURS.get(word)
    if code is None or not colour_on():
        return text
    return f"\x1b[{code}m{text}\x1b[0m"


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


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    indent: str = "  ",
    painted: Sequence[int] = (),
) -> List[str]:
    """Aligned columns under a header, every cell `printable`; the last column is not
    padded. The columns numbered in `painted` show their states in colour (`paint`),
    the padding outside the colour so that columns stay aligned."""
    cells = [[printable(c if c is not None else "-") for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(values: Sequence[str], style: Callable[[int, str], str]) -> str:
        last = len(values) - 1
        padded = [
            style(i, v) + " " * (widths[i] - len(v) if i < last else 0)
            for i, v in enumerate(values)
        ]
        return (indent + "  ".join(padded)).rstrip()

    def colour(i: int, value: str) -> str:
        return paint(value) if i in painted else value

    return [line(list(headers), lambda _i, v: v)] + [line(row, colour) for row in cells]
