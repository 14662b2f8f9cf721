"""The shared words of the daemon: exit codes, outcomes, approval states, execution mode,
default paths and the few numbers every layer agrees on.

Invariant: imports nothing of the package (and nothing that does I/O); every other module
may import it. A new outcome or exit code is added here first.
"""

from __future__ import annotations

# Exit codes (docs/INTERFACES.md). The unit has RestartPreventExitStatus=3.
EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_LOCKED = 4
EXIT_HANDOFF = 5
# `status` only, as `systemctl is-active` (0 = healthy): no daemon runs (state
# `crashed` or `stopped`), or one runs but is not healthy (`degraded`, `starting`,
# `stopping`, or its state.json is stale).
EXIT_NOT_RUNNING = 6
EXIT_DEGRADED = 7
DEFAULT_CONFIG_PATH = "/opt/hybridops/decision-dispatcher/config/config.json"

# The decision consumer's approval markers, <dispatch_id>.approved.json
# (docs/INTERFACES.md "Approval marker").
DEFAULT_APPROVALS_DIR = "/opt/hybridops/decision-consumer/state/approvals"
EXECUTION_MODE = "record-only"
SCHEMA_VERSION = 1
VERSION = "0.1.0"
OUTCOMES = (
    "emitted",
    "coalesced",
    "stale",
    "skipped",
    "duplicate",
    "unrouted",
    "rejected",
    "pending",
)

# Outcomes whose decision already owns a request: a second file with the same
# decision_id must never produce another one.
DISPATCHED_OUTCOMES = ("emitted", "coalesced")

# Files with these outcomes are re-stat'ed on every pass so a change is noticed even
# without inotify.
WATCHED_OUTCOMES = ("pending", "rejected")

# A file with one of these outcomes is a decision that was not dispatched and waits for an
# operator (replay, fix or remove it): counted while the file is there (metrics
# records_awaiting_operator), never cleared by time alone.
OPERATOR_OUTCOMES = ("unrouted", "stale", "rejected")
EXECUTION_PLANES = (
    "runner-local",
    "private-overlay",
    "bastion-explicit",
    "gcp-iap",
    "public-ephemeral",
    "workstation-direct",
)
TARGET_KINDS = ("blueprint", "module")
LOG_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}
HANDOFF_PREFIX = "handoff-check-"
# A synthetic (validate-handoff) request older than this is a check that is long over (a
# killed one left it): the daemon removes it, and never writes one for an older record.
SYNTHETIC_MAX_AGE_SECONDS = 3600.0

# Ledger rows are committed at least every this many records during a burst.
BATCH_MAX = 1024
APPROVAL_STATES = ("awaiting", "approved", "expired", "superseded", "not-required")
