"""`agent-sampler check-config` on hostile YAML, as a subprocess: an alias bomb, a recursive
alias and nesting 20,000 deep each get exit 2 and one `PATH:LINE: message` line, no traceback,
within a second of what checking a valid file takes, and without growing the process.

(Before the bounds in sampler/config/reader.py the alias bomb ran past 120 s and 1.9 GB until
killed, and the other two ended in a RecursionError traceback with exit 1.)"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sampler.config_file import default_config_path

pytestmark = pytest.mark.e2e

INVALID = Path(__file__).resolve().parents[1] / "testdata" / "config" / "invalid"
KILL_AFTER_S = 30.0  # a run this long has failed anyway; do not let it eat the machine
EXTRA_TIME_S = 1.0  # allowed beyond checking the valid default config (interpreter start-up)
EXTRA_RSS_MIB = 16.0


@dataclass(frozen=True)
class Checked:
    exit_code: int
    stderr: str
    seconds: float
    peak_rss_mib: float  # the child's ru_maxrss


def check_config(path: Path, tmp_path: Path) -> Checked:
    script = Path(sys.executable).with_name("agent-sampler")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "sampler"]
    with (tmp_path / "stderr").open("w+", encoding="utf-8") as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            [*command, "check-config", str(path)], stdout=subprocess.DEVNULL, stderr=err
        )
        killer = threading.Timer(KILL_AFTER_S, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # wait4: the child's own peak RSS
        finally:
            killer.cancel()
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return Checked(proc.returncode, err.read(), seconds, usage.ru_maxrss / 1024)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Checked:
    """Checking the (valid) embedded default: start-up, imports, a real config."""
    runs = [check_config(default_config_path(), tmp_path_factory.mktemp("base")) for _ in range(2)]
    assert all(run.exit_code == 0 for run in runs), runs
    return min(runs, key=lambda run: run.seconds)


@pytest.mark.parametrize(
    ("fixture", "line", "message"),
    [
        ("yaml_alias_bomb.yaml", 7, "YAML aliases expand to more than 10000 nodes"),
        ("yaml_recursive_alias.yaml", 4, "recursive YAML alias *loop"),
        ("yaml_nested_too_deep.yaml", 3, "YAML nested deeper than 100 levels"),
        ("yaml_nested_too_deep_through_aliases.yaml", 12, "YAML nested deeper than 100 levels"),
    ],
    ids=["alias-bomb", "recursive-alias", "nested-20000-deep", "nested-through-aliases"],
)
def test_hostile_yaml_is_a_config_error_within_a_second(
    baseline: Checked, tmp_path: Path, fixture: str, line: int, message: str
) -> None:
    path = INVALID / fixture
    checked = check_config(path, tmp_path)
    assert checked.exit_code == 2, checked.stderr
    assert checked.stderr.startswith(f"{path}:{line}: {message}"), checked.stderr
    assert len(checked.stderr.splitlines()) == 1  # the problem, no traceback
    assert checked.seconds < baseline.seconds + EXTRA_TIME_S, (checked, baseline)
    assert checked.peak_rss_mib < baseline.peak_rss_mib + EXTRA_RSS_MIB, (checked, baseline)
