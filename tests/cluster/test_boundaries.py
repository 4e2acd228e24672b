"""The cluster plugs into the broker through what the broker exports (DESIGN.md section 1): no
module of `mqim.cluster` imports a private module of `mqim.broker` or `mqim.storage`."""

from __future__ import annotations

import ast
from pathlib import Path

import mqim.cluster

PRIVATE = ("mqim.broker._", "mqim.storage._")


def test_the_cluster_imports_only_public_names_of_the_broker_and_the_storage() -> None:
    package = Path(mqim.cluster.__file__).parent
    found = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [f"{path.name}: {name}" for name in names if name.startswith(PRIVATE)]
    assert found == []
