"""Ansible callback that streams task results to the hyops runner as JSON lines.

It is a notification callback (the default stdout callback still writes the full log):
every play, task and per-host result becomes one line in ``$HYOPS_PROGRESS_FILE``,
which the runner tails to print live progress and to name the failing task.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: hyops_progress
    type: notification
    short_description: task results as JSON lines for the hyops runner
    description:
      - Appends one JSON object per play, task and host result to the file named by
        the HYOPS_PROGRESS_FILE environment variable; does nothing when it is unset.
"""

MSG_LIMIT = 400


def _text(value: Any) -> str:
    return " ".join(str(value).split())[:MSG_LIMIT]


def _message(result: Mapping[str, Any]) -> str:
    for key in ("msg", "stderr", "module_stderr", "stdout", "module_stdout"):
        value = result.get(key)
        if value:
            return _text(value)
    return ""


def _payload(result: Any) -> Mapping[str, Any]:
    """The module's result, read only: newer ansible-core has public attributes, older
    ones only the private ones."""
    return result.result if hasattr(result, "result") else result._result


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "hyops_progress"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        path = os.environ.get("HYOPS_PROGRESS_FILE")
        # Line-buffered append: the runner reads whole lines while the play runs.
        self._out = open(path, "a", buffering=1, encoding="utf-8") if path else None  # noqa: SIM115

    def _emit(self, **event: Any) -> None:
        if self._out is not None:
            event["t"] = round(time.time(), 3)
            self._out.write(json.dumps(event, sort_keys=True) + "\n")

    def _result(self, status: str, result: Any, **extra: Any) -> None:
        payload = _payload(result)
        host = result.host if hasattr(result, "host") else result._host
        task = result.task if hasattr(result, "task") else result._task
        event: dict[str, Any] = {
            "event": "result",
            "status": status,
            "host": host.get_name(),
            "task": _text(task.get_name()),
        }
        if status in ("failed", "unreachable"):
            event["msg"] = _message(payload)
        event.update(extra)
        self._emit(**event)

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self._emit(event="play", name=_text(play.get_name()))

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._emit(event="task", name=_text(task.get_name()))

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self._emit(event="task", name=_text(task.get_name()), handler=True)

    def v2_runner_on_ok(self, result: Any) -> None:
        changed = bool(_payload(result).get("changed"))
        self._result("changed" if changed else "ok", result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._result("failed", result, ignored=bool(ignore_errors))

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._result("skipped", result)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._result("unreachable", result)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        hosts = {h: stats.summarize(h) for h in sorted(stats.processed)}
        self._emit(event="stats", hosts=hosts)
