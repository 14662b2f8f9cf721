"""Shared builders for the pure-core tests: a fixed clock, configs and records (no I/O)."""

from __future__ import annotations

import copy
import json
from typing import Any

from hyops_dispatcher.config import parse_config

from .conftest import BASE_CONFIG, ROUTES

NOW = 1_790_000_000.0  # 2026-09-21T14:13:20Z
NOW_ISO = "2026-09-21T14:13:20+00:00"


def config(**over: Any) -> Any:
    doc = copy.deepcopy(BASE_CONFIG)
    for key, value in over.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return parse_config(json.dumps(doc).encode(), "/srv/dd/config/config.json")


def route_over(name: str, **over: Any) -> dict[str, Any]:
    routes = copy.deepcopy(ROUTES)
    for key, value in over.items():
        if value is None:
            routes[name].pop(key, None)
        else:
            routes[name][key] = value
    return routes


def rec(**over: Any) -> dict[str, Any]:
    doc = {
        "decision_id": "decision-20260921T141000Z-cutover-0c1d2e3f",
        "decision_type": "cutover",
        "timestamp_utc": "2026-09-21T14:10:00+00:00",
        "status": "emitted",
        "rationale": "probe failed",
        "checks": [{"metric": "up", "ok": False}],
    }
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}
