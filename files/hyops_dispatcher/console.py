"""Text for a person's terminal: control characters escaped (`printable`) and the
one-line `dispatcher: ...` error on stderr.

Invariant: imports nothing of the package; nothing a person reads is printed raw.
"""

from __future__ import annotations

import re
import sys
from typing import Any

CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(value: Any) -> str:
    """Text for a person's terminal: control characters (a newline that would forge a
    row, an ESC sequence) shown as \\xNN escapes. Every human printer uses it."""
    return CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def err(message: str) -> None:
    print(f"dispatcher: {printable(message)}", file=sys.stderr)
