"""Fixtures for the runner tests (helpers live in runner_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from runner_helpers import FixtureEnv


@pytest.fixture
def fixture_env(tmp_path: Path) -> FixtureEnv:
    marker = tmp_path / "host"
    marker.mkdir()
    env = FixtureEnv(tmp_path / "runtime", marker, tmp_path / "inputs.yml")
    env.write_inputs()
    return env


@pytest.fixture
def make_inputs(tmp_path: Path) -> Callable[[str], Path]:
    counter = iter(range(1000))

    def write(text: str) -> Path:
        path = tmp_path / f"inputs-{next(counter)}.yml"
        path.write_text(text)
        return path

    return write
