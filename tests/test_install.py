"""The collector installed as the systemd unit's comment says (`pip install <this repository>` into
a venv), used from an empty folder outside the repository: what it needs ships in the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.mosquitto import Mosquitto

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    # Nothing of this checkout may leak in: no PYTHONPATH, no active venv, not run from the repository.
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(args, cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_the_wheel_installed_outside_the_repository_runs_demo_simulate_and_init(tmp_path: Path,
                                                                                mosquitto: Mosquitto) -> None:
    """Test that the built wheel, installed into a fresh venv, runs `collector demo --for 5` and
    `collector simulate` (the example plant is package data) from an empty folder, and that
    `collector init`'s starter config passes `collector validate`."""
    started = time.monotonic()
    wheels = tmp_path / "wheels"
    # Seconds, not a minute: the build uses this venv's setuptools (no isolated build environment),
    # the new venv gets no pip of its own (this pip installs into it), nothing is byte-compiled,
    # and pip's cache serves every dependency after the first run.
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                  str(ROOT)], tmp_path)
    assert built.returncode == 0, built.stderr
    wheel = next(wheels.glob("*.whl"))
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    assert made.returncode == 0, made.stderr
    installed = _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                      "--no-compile", "--disable-pip-version-check", str(wheel)], tmp_path, timeout=300)
    assert installed.returncode == 0, installed.stderr
    setup_s = time.monotonic() - started

    collector = str(venv / "bin" / "collector")
    empty = tmp_path / "empty"
    empty.mkdir()
    demo = _run([collector, "demo", "--for", "5", "--no-board"], empty, COLLECTOR_HTTP__PORT="0")
    assert demo.returncode == 0, demo.stderr
    assert "demo stopped" in demo.stdout + demo.stderr

    simulate = _run([collector, "simulate", "--mqtt", f"127.0.0.1:{mosquitto.port}", "--for", "2"], empty)
    assert simulate.returncode == 0, simulate.stderr

    init = _run([collector, "init"], empty)
    assert init.returncode == 0, init.stderr
    (empty / "plant.yaml").write_text(init.stdout)
    valid = _run([collector, "validate", "-c", "plant.yaml"], empty)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "plant.yaml: valid" in valid.stdout
    assert sorted(p.name for p in empty.iterdir()) == ["plant.yaml"]  # nothing written next to the user's files
    print(f"wheel build and venv install: {setup_s:.1f}s; whole test: {time.monotonic() - started:.1f}s")
