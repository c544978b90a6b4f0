#!/usr/bin/env python
"""Write constraints.txt: the exact versions, in the running environment, of everything glue-lora[dev] needs.

    python tools/write_constraints.py            # run inside a venv where the test suite passes

The roots are pyproject.toml's dependencies plus the extras named below; their requirements are followed
through the installed distributions' metadata, so the file lists exactly the tested set and nothing else.
Local version labels (`torch 2.13.0+cpu`) are dropped, so a GPU machine takes the same release's CUDA build.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
EXTRAS = ("dev", "report", "tensorboard", "ray", "demo")  # what `make` and CI install


def roots(pyproject: dict) -> list[Requirement]:
    project = pyproject["project"]
    found = [Requirement(text) for text in project["dependencies"]]
    for extra in EXTRAS:
        found += [Requirement(text) for text in project["optional-dependencies"].get(extra, [])]
    return [req for req in found if _name(req.name) != _name(project["name"])]  # self-references: other extras


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(requirements: list[Requirement]) -> dict[str, str]:
    """name -> installed version for every requirement, followed transitively (markers for this machine)."""
    pinned: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(req, ()) for req in requirements]
    while todo:
        req, extras = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (extras or ("",))):
            continue
        name = _name(req.name)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            sys.exit(f"{req.name} is not installed here: install glue-lora[{','.join(EXTRAS)}] first")
        pinned[name] = dist.version.split("+")[0]
        todo += [(Requirement(text), tuple(req.extras)) for text in dist.requires or []]
    return pinned


def main() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pinned = closure(roots(pyproject))
    header = ("# The exact tested set (Python %d.%d): `make` and CI install with `-c constraints.txt`.\n"
              "# Regenerate after changing pyproject.toml or upgrading: python tools/write_constraints.py\n"
              % sys.version_info[:2])
    body = "".join(f"{name}=={version}\n" for name, version in sorted(pinned.items()))
    (REPO / "constraints.txt").write_text(header + body)
    print(f"constraints.txt: {len(pinned)} packages")


if __name__ == "__main__":
    main()
