"""No container engine runs on our machines, so test what the image runs: the Dockerfile's
ENTRYPOINT + CMD, in an empty working directory, on the embedded default config, with the
image's HEALTHCHECK command as the probe."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def instruction(name: str) -> list[str]:
    """The exec-form (JSON array) arguments of a Dockerfile instruction."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            body = line[len(name) + 1 :].strip()
            if name == "HEALTHCHECK":
                body = body[body.index("CMD ") + 4 :]
            return list(json.loads(body))
    raise AssertionError(f"no {name} in the Dockerfile")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        # as the servers do: a connection of a previous run in TIME_WAIT must not count
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def test_the_image_command_serves_on_the_embedded_default(tmp_path: Path) -> None:
    if not all(port_free(p) for p in (4317, 4318, 9464)):
        pytest.skip("ports 4317/4318/9464 are taken on this machine")
    entrypoint, cmd = instruction("ENTRYPOINT"), instruction("CMD")
    assert entrypoint == ["agent-sampler"]
    script = Path(sys.executable).with_name(entrypoint[0])
    health = instruction("HEALTHCHECK")
    assert health[0] == "python"
    proc = subprocess.Popen(
        [str(script), *cmd],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:

        def healthy() -> bool:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            probe = subprocess.run([sys.executable, *health[1:]], capture_output=True, timeout=5)
            return probe.returncode == 0

        wait_until(healthy, 20, "the HEALTHCHECK command to pass")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stdout:
            proc.stdout.close()
