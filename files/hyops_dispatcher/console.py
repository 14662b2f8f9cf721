"""Text for a person's terminal: control characters escaped (`printable`) and the
one-line `dispatcher: ...` error on stderr.

Invariant: imports nothing of the package; nothing a person reads is printed raw.
"""

from __future__ import annotations

import re
import sys
from typing import Any

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
