"""What is running: the package's version (from its installed metadata), the native core's, and
the interpreter's. Shown by ``agent-sampler --version`` and ``agent_sampler_build_info``."""

from __future__ import annotations

import functools
import platform
from importlib import metadata

DISTRIBUTION = "agent-tail-sampler"


@functools.cache  # read at every scrape of agent_sampler_build_info
def package_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # imported from a source tree never installed
        return "unknown"


def python_version() -> str:
    return platform.python_version()


def version_text() -> str:
    """Three lines: the package, the native core (its version and the file loaded: with an
    editable install, a stale extension left in the source tree is a common surprise), Python.
    """
    from sampler import _native

    return (
        f"agent-sampler {package_version()}\n"
        f"native core {_native.__version__} ({_native.__file__})\n"
        f"Python {python_version()} ({platform.python_implementation()}, "
        f"{platform.system()} {platform.machine()})"
    )
