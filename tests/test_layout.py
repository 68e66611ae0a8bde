"""The package's shape: every module opens with what it owns, none is over 400 lines, no
class over 300, and the data paths have folders of their own, named in README.md's
"Layout" (a newcomer finds the record path, the replay path, promotion and checkpoints
from the folder names alone)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mig"
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 300


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_says_what_it_owns():
    missing = [str(p.relative_to(PACKAGE)) for p in _modules()
               if not ast.get_docstring(ast.parse(p.read_text()))]
    assert missing == []


def test_no_module_over_400_lines_and_no_class_over_300():
    long = []
    for path in _modules():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long.append(f"{path.relative_to(PACKAGE)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.name}: {size} lines")
    assert long == []


def test_the_data_paths_have_folders_named_in_the_readme():
    readme = (PACKAGE.parent / "README.md").read_text()
    for folder in ("member", "checkpoint", "control", "ring", "wire", "kafka", "ops", "cli",
                   "broker", "config"):
        assert (PACKAGE / folder / "__init__.py").is_file(), folder
        assert f"`mig/{folder}/`" in readme, folder
    assert not list(PACKAGE.glob("*.py")) or {p.name for p in PACKAGE.glob("*.py")} <= {
        "__init__.py", "__main__.py", "errors.py", "paths.py", "logs.py", "progress.py",
        "deadline.py"}
