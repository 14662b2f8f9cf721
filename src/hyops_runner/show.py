"""``hyops show``: the state of one module slot, for people (summary) or tools (``--json``)."""

from __future__ import annotations

import sys

from .errors import EXIT_FAILURE, EXIT_OK, HyopsError
from .fsutil import dump_json
from .runtime import Layout
from .state import read_state


def show(layout: Layout, as_json: bool) -> int:
    path = layout.state_file
    if not path.exists():
        raise HyopsError(f"hyops: no state for {layout.module_ref} at {path} (not applied yet)")
    doc = read_state(path)
    if doc is None:
        raise HyopsError(f"hyops: state file {path} is not a JSON object")
    if as_json:
        sys.stdout.write(dump_json(doc))
        return EXIT_OK
    print(f"module     {doc.get('module_ref')}")
    print(f"state      {path}")
    print(f"status     {doc.get('status')}")
    print(f"run_id     {doc.get('run_id')}")
    print(f"updated_at {doc.get('updated_at')}")
    print(f"evidence   {doc.get('evidence_dir')}")
    if doc.get("last_error"):
        print(f"last_error {doc.get('failed_command')}: {doc['last_error']}")
    outputs = doc.get("outputs") or {}
    print(f"outputs    {len(outputs)}")
    for key in sorted(outputs):
        print(f"  {key} = {outputs[key]}")
    return EXIT_OK if doc.get("status") in ("ok", "destroyed") else EXIT_FAILURE
