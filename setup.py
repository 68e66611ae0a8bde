"""Build hook: compile the shim (shim/Makefile) and ship it with the Avro schemas in the
package (``mig/_data``), so ``pip install .`` gives a working ``mig`` from a source checkout."""

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithShim(build_py):
    def run(self) -> None:
        subprocess.run(["make", "-C", str(ROOT / "shim")], check=True)
        super().run()
        if self.editable_mode:
            return  # an editable install finds shim/build and avro/ in the checkout
        data = Path(self.build_lib) / "mig" / "_data"
        (data / "avro").mkdir(parents=True, exist_ok=True)
        (data / "avro" / "history").mkdir(exist_ok=True)
        for schema in [*(ROOT / "avro").glob("*.avsc"), *(ROOT / "avro").glob("history/*.avsc")]:
            shutil.copy2(schema, data / "avro" / schema.relative_to(ROOT / "avro"))
        for lib in ("libmigshim.so", "libmigenc.so"):
            shutil.copy2(ROOT / "shim" / "build" / lib, data / lib)


setup(cmdclass={"build_py": BuildWithShim})
