"""hyops decision dispatcher: decision records in, approval-gated dispatch requests out.

Python 3.9+ standard library only. It never executes anything (record-only). One
direction of dependency, no cycles: leaves <- core <- shell <- edge (tests/daemon/
test_layout.py keeps this map and the imports honest).

Leaves (import nothing of the package):
- states: exit codes, outcomes, approval states, the shared words and numbers
- jsontext: strict JSON in and out, depth caps, canonical bytes
- console: text for a person's terminal, the one-line error, colour on a terminal
- completion: the bash completion script, generated from the parser
- ids: UTC stamps, the decision hash, dispatch ids
- fsio: durable writes of any file, staged batches, safe opens of our own files

Pure core (no I/O):
- config: parse_config (pure) and load_config (its one read)
- record: parse and validate a decision record; record and ledger file names
- decide: valid record + episode state -> Decision and its request document
- verdicts: a record *file* -> Outcome (settle, pending, rejected, duplicate, collision)

Shell:
- jsonlog: the JSON event log (file and stderr)
- host: instance lock, sd_notify, libc memory release
- release: the code that runs (version, digest of its sources, release folder)
- inotify: the records folder's change events
- ledger: every SQL statement of ledger.db, schema version in user_version
- index: what is known per record file (in the ledger)
- watcher: which names need a look in a pass
- batch: the one write path of requests (durable, then the ledger)
- approvals: the approval rule, its SQL twin, the marker path, the ApprovalBook
- episodes: the DR episodes decide asks about (ledger, requests and approvals folders)
- replayguard: what a replay would surprise someone with (needs --yes)
- report: counters, the one health rule, state.json
- runconfig: the running config's copy under state/ (read commands fall back to it)
- metrics: the Prometheus textfile (pure render + writer)
- inbox: replays asked of the running daemon
- synthetic: removes validate-handoff's requests once they are over (record gone, an hour)
- pipeline: read -> judge -> decide for one record file

Edge:
- daemon: the loop (owns retry and health)
- ctl: check-config, status, list, explain, replay
- approve: approve and withdraw, the operator's writes about a request
- handoff: validate-handoff
- cli: arguments, the config loaded once, dropping root, main()
"""

LAYERS = {
    "leaves": ("states", "jsontext", "console", "completion", "ids", "fsio"),
    "core": ("config", "record", "decide", "verdicts"),
    "shell": (
        "jsonlog",
        "host",
        "release",
        "inotify",
        "ledger",
        "index",
        "watcher",
        "batch",
        "approvals",
        "episodes",
        "replayguard",
        "report",
        "runconfig",
        "metrics",
        "inbox",
        "synthetic",
        "pipeline",
    ),
    "edge": ("daemon", "approve", "ctl", "handoff", "cli"),
}
