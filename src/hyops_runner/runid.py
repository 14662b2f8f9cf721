"""Run ids (``<command>-<YYYYMMDDTHHMMSSZ>-<8 hex>``) and the timestamps state files carry."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

RUN_ID_RE = re.compile(r"^[a-z][a-z-]*-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_run_id(command: str, now: datetime | None = None) -> str:
    # 32 random bits keep two runs started in the same second apart.
    stamp = (now or utc_now()).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{command}-{stamp}-{secrets.token_hex(4)}"


def updated_at(now: datetime | None = None) -> str:
    """Second precision with ``Z``, as HybridOps writes ``updated_at``."""
    return (now or utc_now()).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
