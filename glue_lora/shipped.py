"""The configs shipped with glue-lora, found the same way from a clone, an editable install and a wheel.

The repository keeps them in `configs/` beside the package; the wheel carries the same tree as the
package-data folder `glue_lora/configs/` (pyproject.toml maps one onto the other), so `extends:` and
`init_from:` paths, which are relative to the file, resolve identically everywhere.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from glue_lora.errors import UsageError

CONFIG_SUFFIXES = (".yaml", ".yml")


def configs_root() -> Path | None:
    """The shipped configs folder: the installed package data, else the clone's `configs/`; None if neither."""
    try:
        spec = importlib.util.find_spec("glue_lora.configs")
    except ImportError:
        spec = None
    candidates = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    candidates.append(Path(__file__).resolve().parent.parent / "configs")
    return next((path for path in candidates if path.is_dir()), None)


def resolve_config_path(name: str) -> Path:
    """A config file path as given, or a shipped config's name (`roberta-base/lora/rte`) -> its file."""
    path = Path(name)
    if path.is_file() or path.suffix in CONFIG_SUFFIXES:
        return path  # a file, or a named file that is missing: load_config reports it with the fix
    root = configs_root()
    for candidate in [root / f"{name}{suffix}" for suffix in CONFIG_SUFFIXES] if root else []:
        if candidate.is_file():
            return candidate
    where = f"in {root}" if root else "(no shipped configs found)"
    raise UsageError(f"no config file {name!r} and no shipped config of that name {where}; "
                     "list them with `glue-lora configs`")
