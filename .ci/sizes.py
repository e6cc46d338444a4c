"""List allscan modules over 400 lines and functions over 60 (issue 12's size limits); exit 1 when any is."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def oversized(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.count("\n")
        if lines > MAX_MODULE_LINES:
            found.append(f"{path}: module of {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{path}:{node.lineno}: {node.name} is {length} lines")
    return found


if __name__ == "__main__":
    problems = oversized(Path(__file__).resolve().parents[1] / "allscan")
    print("\n".join(problems) or "sizes: every module <= 400 lines, every function <= 60")
    sys.exit(1 if problems else 0)
