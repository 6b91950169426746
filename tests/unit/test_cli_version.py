"""`agent-sampler --version`, run as users run it: the installed console script."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from sampler import _native


def agent_sampler(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("agent-sampler")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "sampler"]
    return subprocess.run(
        [*base, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def test_version_names_the_package_the_native_core_and_python() -> None:
    done = agent_sampler("--version")
    assert (done.returncode, done.stderr) == (0, "")
    package, native, python = done.stdout.splitlines()
    assert package == f"agent-sampler {metadata.version('agent-tail-sampler')}"
    assert native == f"native core {_native.__version__} ({_native.__file__})"
    assert python.startswith(f"Python {platform.python_version()} (")
