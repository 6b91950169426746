"""`agent-sampler check-config PATH`: exit 0 and one OK line, or exit 2 and one
`PATH:LINE: key: message` line per problem on stderr."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sampler.cli import main
from sampler.config.load import default_config_path

INVALID = Path(__file__).resolve().parent.parent / "testdata" / "config" / "invalid"


def test_embedded_default_is_ok(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(default_config_path())
    assert main(["check-config", path]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (f"{path}: OK (6 rules)\n", "")


@pytest.mark.parametrize(
    ("fixture", "lines"),
    [
        (
            "bad_duration.yaml",
            [(4, "sessions.decision_wait", "expected a duration such as 250ms, 30s, 5m or 1h")],
        ),
        (
            "unknown_top_level_key.yaml",
            [(4, "sesions", "unknown key (did you mean 'sessions'?)")],
        ),
        (
            "three_problems.yaml",
            [
                (7, "sessions.decision_wait", "expected a duration"),
                (10, "action.probability", "expected a probability in (0, 1]"),
                (11, "when.eror", "unknown condition kind (did you mean 'error'?)"),
            ],
        ),
    ],
    ids=["one-problem", "did-you-mean", "three-problems"],
)
def test_invalid_config_exits_2_with_one_line_per_problem(
    capsys: pytest.CaptureFixture[str], fixture: str, lines: list[tuple[int, str, str]]
) -> None:
    path = str(INVALID / fixture)
    assert main(["check-config", path]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    found = [_split(line, path) for line in err.splitlines()]
    assert len(found) == len(lines)
    for (line, key_end, message), (got_line, got_key, got_message) in zip(
        lines, found, strict=True
    ):
        # Full key paths (`rules[0]...`) are checked in config/test_load.py.
        assert got_line == line and got_key.endswith(key_end)
        assert got_message.startswith(message)


def _split(line: str, path: str) -> tuple[int, str, str]:
    """`PATH:LINE: key: message` -> (LINE, key, message)."""
    assert line.startswith(f"{path}:"), line
    match = re.fullmatch(r":(\d+): ([\w.\[\]]+): (.+)", line.removeprefix(path))
    assert match is not None, line
    return int(match[1]), match[2], match[3]


def test_missing_file_exits_2_with_a_readable_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The file as a whole has a problem: no line number (there used to be a bogus ":0")."""
    path = str(tmp_path / "nope.yaml")
    assert main(["check-config", path]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"{path}: cannot read: No such file or directory\n")


def test_a_missing_relative_path_says_where_it_was_looked_for(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["check-config", "sampler.yaml"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == (
        "",
        f"sampler.yaml: cannot read: No such file or directory (in {tmp_path})\n",
    )


def test_retry_max_elapsed_time_zero_is_accepted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`0s` is documented as "never give up"; check-config must not call it an error."""
    path = tmp_path / "forever.yaml"
    path.write_text(
        "exporter:\n"
        "  queue_dir: /var/lib/agent-sampler/queue\n"
        "  retry:\n"
        "    max_elapsed_time: 0s\n"
        "rules:\n"
        "  - name: all\n"
        "    action: keep\n",
        encoding="utf-8",
    )
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (f"{path}: OK (1 rules)\n", "")
