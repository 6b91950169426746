"""A real redis-server (Debian's package, installed by scripts/test.sh) on loopback, on a free
port, for the cluster's tests: started, stopped and started again on the same port (an outage),
never left running. No persistence: each start is an empty store."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: scripts/test.sh installs it (apt-get install "
                "redis-server), as CI does"
            )
        self.binary = binary
        self.workdir = workdir
        self.port = port or _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self, *args: str) -> RedisServer:
        log = (self.workdir / f"redis-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                LOOPBACK,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {self.logs()}")
            time.sleep(0.02)
        return self

    def answers(self) -> bool:
        try:
            return self.command("PING") == b"+PONG\r\n"
        except OSError:
            return False

    def command(self, *words: str) -> bytes:
        """One command in RESP, its raw reply (enough for tests; no client library)."""
        request = f"*{len(words)}\r\n".encode() + b"".join(
            f"${len(w.encode())}\r\n".encode() + w.encode() + b"\r\n" for w in words
        )
        with socket.create_connection((LOOPBACK, self.port), timeout=2) as sock:
            sock.sendall(request)
            return sock.recv(1 << 20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def logs(self) -> str:
        path = self.workdir / f"redis-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""
