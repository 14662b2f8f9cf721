"""Errors a person reads, and the exit codes of docs/RUNNER.md (0 ok, 1 failure, 2 usage)."""

from __future__ import annotations

from .redact import scrub

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class HyopsError(Exception):
    """A failure the operator can act on; ``str()`` is already the one-line message."""

    exit_code = EXIT_FAILURE


class UsageError(HyopsError):
    """Bad command line (unknown module, bad env name, missing argument): exit 2."""

    exit_code = EXIT_USAGE


class InputError(HyopsError):
    """Inputs that cannot be read or do not validate; ``problems`` holds one line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        # The last guard: whoever wrote a problem line, key material never leaves in it.
        self.problems = [scrub(p) for p in problems]
        super().__init__("\n".join(f"hyops: invalid inputs ({source}): {p}" for p in self.problems))


class LockBusy(HyopsError):
    """Another hyops run holds the module state slot."""
