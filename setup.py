"""setuptools hook: a built wheel carries the module package (see src/hyops_runner/bundle.py).

Everything else about the package is in pyproject.toml.
"""

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

REPO = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bundle", REPO / "src/hyops_runner/bundle.py")
bundle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bundle)


class BuildWithModule(build_py):
    def run(self) -> None:
        super().run()
        # An editable install reads the checkout itself; only real builds get a copy.
        if not getattr(self, "editable_mode", False):
            bundle.stage(REPO, Path(self.build_lib) / "hyops_runner" / "package")


setup(cmdclass={"build_py": BuildWithModule})
