"""What both HA modules share: the repository, the prefix of their podman objects (one
per checkout, so two checkouts never meet) and the DR route they converge with."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PREFIX = "hyops-ha-" + hashlib.sha256(str(REPO).encode()).hexdigest()[:8] + "-"
UNIT = "hyops-decision-dispatcher"


def cutover_route(**extra: Any) -> dict[str, Any]:
    return {
        "target_kind": "blueprint",
        "target_ref": "dr/postgresql-ha-failover-gcp@v1",
        "target_env": "dr",
        "execution_plane": "runner-local",
        **extra,
    }
