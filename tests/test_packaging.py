"""A real package: the wheel carries the configs, and works after `pip install <wheel>` outside the clone."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from glue_lora import __version__

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("glue_lora", "configs", "pyproject.toml", "README.md")


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 180) -> str:
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, command))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def build_wheel(tmp_path: Path) -> Path:
    """`python -m build --wheel` on a copy of the sources, so no build/ or egg-info lands in the clone."""
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"),
          str(source)], cwd=tmp_path, env=dict(os.environ))
    (wheel,) = (tmp_path / "dist").glob("glue_lora-*.whl")
    return wheel


def clean_venv(tmp_path: Path) -> Path:
    """A new venv without glue-lora; its dependencies are this environment's, seen through a .pth file.

    Every distribution here except glue-lora itself is linked into one folder that the new venv puts on its
    path: `pip install <wheel>` then finds the dependencies satisfied and installs only glue-lora (seconds,
    offline) instead of re-downloading torch. The fresh-clone `make` check covers installing those.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    shared = tmp_path / "deps"
    shared.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not re.match(r"(__editable__\.?_*)?glue_lora", entry.name):
            (shared / entry.name).symlink_to(entry)
    (site_packages,) = venv.glob("lib/python*/site-packages")
    (site_packages / "_deps.pth").write_text(f"{shared}\n")
    return venv


def test_wheel_installs_and_works_outside_the_clone(tmp_path):
    wheel = build_wheel(tmp_path)
    venv = clean_venv(tmp_path)
    outside = tmp_path / "elsewhere"  # no configs/ folder, no clone on the path
    outside.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], cwd=outside, env=env)
    glue_lora = str(venv / "bin" / "glue-lora")

    assert _run([glue_lora, "--version"], outside, env).strip() == f"glue-lora {__version__}"
    table = _run([glue_lora, "configs"], outside, env)
    shipped = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml")
                     if p.name != "base.yaml" and p.relative_to(REPO / "configs").parts[0] not in ("accelerate", "sweeps"))
    assert sorted(re.findall(r"^\| (configs/\S+\.yaml) \|", table, re.M)) == shipped
    config = _run([glue_lora, "train", "roberta-base/lora/rte", "--print-config"], outside, env)
    assert re.search(r"^task: rte$", config, re.M) and re.search(r"^global_batch_size: 256$", config, re.M)
    init_from = Path(re.search(r"^init_from: (\S+)$", config, re.M).group(1))
    assert init_from.is_file() and venv in init_from.parents, "init_from resolves inside the installed package"
    assert not list(outside.iterdir()), "nothing written to the working directory"

