"""The decision: a valid record and the episode state -> outcome, dispatch id and the
request document (route, approval, coalescing, supersedes, stale and skipped rules).

Invariant: pure and deterministic: the same record, config, clock and episode state give
the same Decision; nothing here reads a file or the clock.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Protocol, Sequence, Tuple

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
from .states import EXECUTION_MODE, SCHEMA_VERSION, SYNTHETIC_MAX_AGE_SECONDS


def find_route(config: Config, decision_type: str) -> Tuple[Optional[Route], str]:
    """Exact, case-sensitive match; the reason names a near match (case) when there is one."""
    route = config.routes.get(decision_type)
    if route is not None:
        return route, ""
    near = [k for k in config.routes if k.lower() == decision_type.lower()]
    hint = f" (route {near[0]!r} differs only by case; matching is exact)" if near else ""
    known = ", ".join(sorted(config.routes)) or "none"
    return None, f"no route for decision_type {short(decision_type, 60)}{hint}; routes: {known}"


class Episode(NamedTuple):
    """One request of a route and the decisions folded into it: a DR episode."""

    dispatch_id: str
    first: float  # its own decision's time
    last: float  # the latest decision time folded into it (first when none)


class EpisodeView(Protocol):
    """What the ledger (and the batch being written) knows about requests, asked by
    decide. Synthetic handoff checks are never part of it. The daemon's view is
    episodes.LedgerEpisodes; tests give a table."""

    def around(self, route: str, epoch: float) -> Tuple[Optional[Episode], Optional[Episode]]:
        """The route's latest request whose decision time is at or before `epoch`, and
        its earliest one after `epoch`."""

    def request_between(self, routes: Sequence[str], lo: float, hi: float) -> bool:
        """A request on one of `routes` whose decision time is within [lo, hi]."""

    def approval(self, dispatch_id: str) -> str:
        """The request's approval state now: awaiting, approved, expired, not-required,
        or gone (taken out of the requests folder)."""


# Approval states of the episode's request, for a decision of the same episode:
# folded quietly (the request still waits for a person, who will see one request) ...
FOLD_QUIETLY = ("awaiting",)
# ... folded and said (the request was approved, needs none, or was taken away: nobody
# would see this decision otherwise) ...
FOLD_AND_SAY = ("approved", "not-required", "gone")
# ... and an expired request is never joined: the next decision gets a new request.


def superseding_routes(config: Config, route: str) -> Tuple[str, ...]:
    """The routes that declare `supersedes: [route]`: only their requests end an episode
    of `route` or supersede its request."""
    return tuple(sorted(k for k, r in config.routes.items() if route in r.supersedes))


def episode_to_join(
    route: Route, epoch: float, config: Config, episodes: EpisodeView
) -> Optional[Tuple[Episode, str]]:
    """The episode a decision of `route` at `epoch` belongs to, and its request's approval
    state; None: it starts a new episode. It belongs to the route's request nearest in
    decision time (the one before it first) when its time lies within coalesce_seconds of
    that episode's decisions (the window slides on the last one), no request of a route
    declaring `supersedes: [route]` lies in between by decision time, and the request has
    not expired."""
    enders = superseding_routes(config, route.key)
    for episode in episodes.around(route.key, epoch):
        if episode is None:
            continue
        gap = max(episode.first - epoch, epoch - episode.last, 0.0)
        if gap >= route.coalesce_seconds:
            continue
        lo, hi = min(epoch, episode.first), max(epoch, episode.first)
        if enders and episodes.request_between(enders, lo, hi):
            continue  # a failback between them: this decision is another outage
        state = episodes.approval(episode.dispatch_id)
        if state in FOLD_QUIETLY or state in FOLD_AND_SAY:
            return episode, state
    return None


def request_superseded(route: Route, epoch: float, episodes: EpisodeView) -> Optional[str]:
    """The request a new request of `route` at `epoch` supersedes: of the routes `route`
    declares, the latest request whose decision time is not after `epoch`, when it still
    awaits approval (the latest such one when several routes are declared)."""
    found: Optional[Episode] = None
    for other in route.supersedes:
        before, _after = episodes.around(other, epoch)
        if before is None or (found is not None and before.first <= found.first):
            continue
        if episodes.approval(before.dispatch_id) == "awaiting":
            found = before
    return None if found is None else found.dispatch_id


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
    # coalesced: the approval state of the request it was folded into (FOLD_AND_SAY:
    # the daemon says it, as event coalesced-after-approval and its counter).
    folded_into: str = ""

    @property
    def said(self) -> bool:
        """Folded into a request a person will not look at again: said, never silent."""
        return self.outcome == "coalesced" and self.folded_into in FOLD_AND_SAY


def decide(
    record: Any,
    *,
    record_path: str,
    mtime: float,
    config: Config,
    now: float,
    episodes: Optional[EpisodeView] = None,
    force: bool = False,
) -> Decision:
    """Route one valid record (a ValidRecord, or a dict that is validated here).
    `episodes` says what requests exist, for coalescing within a DR episode and for
    `supersedes` (None: no request exists, as for replay and validate-handoff). `force`
    (replay) skips the stale, skipped, coalesce and supersede rules but never the route
    or the future rule."""
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
    if not force and is_handoff(decision_id) and age > SYNTHETIC_MAX_AGE_SECONDS:
        return base._replace(
            outcome="stale",
            reason=f"synthetic handoff check {int(age)} s old, over "
            f"{SYNTHETIC_MAX_AGE_SECONDS:g} s: its check is over, no request is written",
        )
    # Coalescing folds re-emissions of ONE outage; never into an earlier episode's request.
    # Replays and synthetic checks join no episode and supersede nothing.
    view = None if force or is_handoff(decision_id) else episodes
    joined = None
    if view is not None and route.coalesce_seconds > 0:
        joined = episode_to_join(route, epoch, config, view)
    if joined is not None:
        episode, state = joined
        reason = f"within coalesce_seconds {route.coalesce_seconds} of {episode.dispatch_id} "
        if state in FOLD_AND_SAY:
            how = {
                "approved": "was approved before this decision arrived",
                "not-required": "needed no approval and was released",
                "gone": "was taken out of the requests folder",
            }[state]
            reason += (
                f"(route {route.key}), which {how}: this decision is in no request; "
                f"if that run did not happen or failed, use 'replay {decision_id}'"
            )
        else:
            reason += f"(route {route.key}, awaiting approval)"
        return base._replace(
            outcome="coalesced",
            dispatch_id=episode.dispatch_id,
            reason=reason,
            folded_into=state,
        )
    supersedes = None
    if view is not None and route.supersedes:
        supersedes = request_superseded(route, epoch, view)
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
    """The request document (docs/INTERFACES.md "Dispatch request").
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
