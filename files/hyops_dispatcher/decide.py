"""The decision: a valid record and the episode state -> outcome, dispatch id and the
request document (route, approval, coalescing, supersedes, stale and skipped rules).

Invariant: pure and deterministic: the same record, config, clock and episode state give
the same Decision; nothing here reads a file or the clock.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

from .config import Config, Route
from .ids import iso_ts, make_dispatch_id
from .jsontext import cut_depth, short
from .record import (
    FUTURE_SKEW_SECONDS,
    REQUEST_DEPTH_MAX,
    ValidRecord,
    decision_time,
    is_handoff,
    validate_record,
)
from .states import EXECUTION_MODE, SCHEMA_VERSION


def find_route(config: Config, decision_type: str) -> Tuple[Optional[Route], str]:
    """Exact, case-sensitive match; the reason names a near match (case) when there is one."""
    route = config.routes.get(decision_type)
    if route is not None:
        return route, ""
    near = [k for k in config.routes if k.lower() == decision_type.lower()]
    hint = f" (route {near[0]!r} differs only by case; matching is exact)" if near else ""
    known = ", ".join(sorted(config.routes)) or "none"
    return None, f"no route for decision_type {short(decision_type, 60)}{hint}; routes: {known}"


class LastEmit(NamedTuple):
    """A route's latest request, for coalescing and episodes."""

    epoch: float  # the decision's time
    dispatch_id: str


def episode_open(route: str, last_emit: Dict[str, LastEmit]) -> Optional[LastEmit]:
    """The request of the DR episode still open on `route`: its latest request, unless a
    request on any other route came at or after it (a failback after a cutover ends the
    outage). None: the next decision on `route` starts a new episode."""
    last = last_emit.get(route)
    if last is None:
        return None
    for other, emit in last_emit.items():
        if other != route and emit.epoch >= last.epoch:
            return None
    return last


def latest_other(route: str, last_emit: Dict[str, LastEmit]) -> Optional[LastEmit]:
    """The latest request on any route but `route` (the one a new request may supersede)."""
    others = [emit for other, emit in last_emit.items() if other != route]
    return max(others, default=None, key=lambda emit: emit.epoch)


class Decision(NamedTuple):
    """What the core decided about one valid record."""

    outcome: str
    reason: str
    decision_id: str
    decision_type: str
    decision_epoch: float
    route: Optional[str] = None
    dispatch_id: Optional[str] = None
    request: Optional[dict] = None


def decide(
    record: Any,
    *,
    record_path: str,
    mtime: float,
    config: Config,
    now: float,
    last_emit: Dict[str, LastEmit],
    force: bool = False,
    still_waiting: Optional[Callable[[str], bool]] = None,
) -> Decision:
    """Route one valid record (a ValidRecord, or a dict that is validated here). `last_emit`
    maps route -> LastEmit (each route's latest request), for coalescing within a DR
    episode. `still_waiting(dispatch_id)` says whether an earlier request still waits
    for its approval (the new one then names it in `supersedes`). `force` (replay) skips
    the stale, skipped and coalesce rules but never the route or the future rule."""
    valid = (
        record if isinstance(record, ValidRecord) else ValidRecord(record, *validate_record(record))
    )
    doc, decision_id, decision_type = valid.doc, valid.decision_id, valid.decision_type
    epoch, source = decision_time(doc, decision_id, mtime)
    base = Decision("", "", decision_id, decision_type, epoch)
    ahead = epoch - now
    if source != "file_mtime" and ahead > FUTURE_SKEW_SECONDS:
        said = f"decision time from {source} is {int(ahead)} s in the future"
        if ahead > FUTURE_SKEW_SECONDS + config.max_record_age_seconds:
            # Held that long it could never be judged for age: refused (a change re-opens).
            return base._replace(
                outcome="rejected",
                reason=f"{said}, more than max_record_age_seconds "
                f"{config.max_record_age_seconds:g} ahead; fix the clock or the record",
            )
        # Another host's clock: held (pending) until it is within the skew, then decided.
        return base._replace(
            outcome="pending",
            reason=f"{said} (more than the {FUTURE_SKEW_SECONDS} s clock skew allowed); "
            "held until it is not",
        )
    status = doc.get("status")
    if not force and status == "queued-local-exec":
        return base._replace(
            outcome="skipped",
            reason="record status is queued-local-exec: the decision service already ran it",
        )
    route, why = find_route(config, decision_type)
    if route is None:
        return base._replace(outcome="unrouted", reason=why)
    base = base._replace(route=route.key)
    dispatch_id = make_dispatch_id(epoch, decision_type, decision_id)
    age = now - epoch
    if not force and config.max_record_age_seconds > 0 and age > config.max_record_age_seconds:
        return base._replace(
            outcome="stale",
            reason=f"decision is {int(age)} s old, over max_record_age_seconds "
            f"{config.max_record_age_seconds:g}; use 'replay {decision_id}' to dispatch it",
        )
    # Coalescing folds re-emissions of ONE outage; never into an earlier episode's request.
    last = episode_open(route.key, last_emit)
    if (
        not force
        and route.coalesce_seconds > 0
        and last is not None
        and not is_handoff(decision_id)
        and abs(epoch - last.epoch) < route.coalesce_seconds
    ):
        return base._replace(
            outcome="coalesced",
            dispatch_id=last.dispatch_id,
            reason=f"within coalesce_seconds {route.coalesce_seconds} of {last.dispatch_id} "
            f"(route {route.key})",
        )
    older = None if force or is_handoff(decision_id) else latest_other(route.key, last_emit)
    supersedes = None
    if older is not None and still_waiting is not None and still_waiting(older.dispatch_id):
        supersedes = older.dispatch_id
    request = build_request(
        doc,
        decision_id=decision_id,
        decision_type=decision_type,
        dispatch_id=dispatch_id,
        record_path=record_path,
        route=route,
        config=config,
        now=now,
        supersedes=supersedes,
    )
    return base._replace(
        outcome="emitted",
        dispatch_id=dispatch_id,
        request=request,
        reason="replayed by operator" if force else "",
    )


def approval_for(route: Route, config: Config) -> Tuple[bool, str]:
    """Whether a request on this route waits for approval, and where that came from: the
    route's requires_approval when set, else the global require_approval."""
    if route.requires_approval is not None:
        return route.requires_approval, "route"
    return config.require_approval, "global"


def build_request(
    record: dict,
    *,
    decision_id: str,
    decision_type: str,
    dispatch_id: str,
    record_path: str,
    route: Route,
    config: Config,
    now: float,
    supersedes: Optional[str] = None,
) -> dict:
    """The request document (CONTRACT.md 3 plus schema_version, route, approval source).
    A synthetic handoff check always waits for approval, whatever the route says: a
    consumer must never find a synthetic request it would run."""
    requires, source = approval_for(route, config)
    synthetic = is_handoff(decision_id)
    if synthetic:
        requires, source = True, "synthetic"
    rationale = record.get("rationale")
    checks = record.get("checks")
    ts = record.get("timestamp_utc")
    status = record.get("status")
    request = {
        "schema_version": SCHEMA_VERSION,
        "dispatch_id": dispatch_id,
        "timestamp_utc": iso_ts(now),
        "status": "awaiting-approval" if requires else "queued",
        "execution_mode": EXECUTION_MODE,
        "source_decision_id": decision_id,
        "source_decision_file": record_path,
        "decision_type": decision_type,
        "route": route.key,
        "execution_plane": route.execution_plane,
        "target_kind": route.target_kind,
        "target_ref": route.target_ref,
        "target_env": route.target_env,
        "requires_approval": bool(requires),
        "approval_source": source,
        "rationale": rationale if isinstance(rationale, str) else None,
        # The document is 1 level, `checks` 2: deeper carried parts are cut.
        "checks": cut_depth(checks, REQUEST_DEPTH_MAX - 1) if isinstance(checks, list) else [],
        "decision_timestamp_utc": ts if isinstance(ts, str) else None,
        "decision_status": status if isinstance(status, str) else None,
    }
    if route.approval_ttl_seconds:
        request["expires_at"] = iso_ts(now + route.approval_ttl_seconds)
    if supersedes:
        request["supersedes"] = supersedes
    if synthetic:
        request["synthetic"] = True
    return request
