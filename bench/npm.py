"""npm installs of the benchmarks' outside tools (Node-RED, the node-opcua server), each into a
git-ignored folder of its own under bench/, on first use; the test command never installs them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def ensure(folder: Path, packages: list[str], marker: str) -> Path:
    """``npm install packages`` into ``folder`` unless ``folder/node_modules/marker`` exists;
    return ``folder/node_modules``."""
    modules = folder / "node_modules"
    if (modules / marker).exists():
        return modules
    if shutil.which("npm") is None:
        raise SystemExit("this benchmark needs node and npm (Debian: apt-get install nodejs npm)")
    folder.mkdir(exist_ok=True)
    (folder / "package.json").write_text('{"private": true}\n')
    print(f"installing {' '.join(packages)} into {folder} ...", flush=True)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", *packages], cwd=folder,
                   check=True)
    return modules
