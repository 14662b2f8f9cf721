"""Controller side of the decision-dispatcher module package (the ``hyops`` runner)."""

__version__ = "0.1.0"
