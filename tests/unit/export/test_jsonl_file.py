"""The file downstream's file, rotated as the collector's file exporter rotates its own: lines
whole and in order across files, rotated files named by the time of rotation, the newest
``max_backups`` kept, older than ``max_age`` deleted, optionally gzipped. Time is a fake wall
clock; the mill runs at once in the test's thread."""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sampler.export.jsonl_file import JsonlFile, Rotation

T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z
DAY = 86_400.0


class WallClock:
    def __init__(self) -> None:
        self.time = T0

    def __call__(self) -> float:
        return self.time


def line(n: int, size: int = 100) -> bytes:
    text = f'{{"n":{n},"pad":"'
    return (text + "x" * (size - len(text) - 3) + '"}\n').encode()


def read(path: Path) -> list[bytes]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    assert not data or data.endswith(b"\n")  # whole lines only
    return data.splitlines(keepends=True)


def rotated(file: JsonlFile) -> list[Path]:
    """The rotated files beside ``file``, newest first (their names sort by time)."""
    return sorted(file.path.parent.glob(f"{file.path.stem}-*"), reverse=True)


def every_line(file: JsonlFile) -> list[bytes]:
    """The lines of the rotated files, oldest first, then of the file itself."""
    lines = [item for path in reversed(rotated(file)) for item in read(path)]
    return lines + (read(file.path) if file.path.exists() else [])


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
def opened() -> Iterator[list[JsonlFile]]:
    """Files a test opens, closed when it ends."""
    files: list[JsonlFile] = []
    yield files
    for file in files:
        file.close()


Maker = Callable[..., JsonlFile]


@pytest.fixture
def make(opened: list[JsonlFile], clock: WallClock) -> Maker:
    def make(path: Path, rotation: Rotation | None = None) -> JsonlFile:
        file = JsonlFile(path, rotation, clock=clock)
        opened.append(file)
        return file

    return make


def test_without_rotation_the_file_only_grows(tmp_path: Path, make: Maker) -> None:
    file = make(tmp_path / "kept.jsonl")
    for n in range(50):
        file.append(line(n))
    assert rotated(file) == []
    assert read(file.path) == [line(n) for n in range(50)]


def test_rotation_comes_between_lines_and_keeps_every_line_in_order(
    tmp_path: Path, make: Maker, clock: WallClock
) -> None:
    file = make(tmp_path / "kept.jsonl", Rotation(max_bytes=1000, max_backups=0))
    for n in range(25):  # 100 bytes each: ten to a file
        clock.time += 1.0
        file.append(line(n))
    assert [path.name for path in rotated(file)] == [
        "kept-2024-05-01T12-00-21.000.jsonl",  # rotated before line 20, at T0 + 21 s
        "kept-2024-05-01T12-00-11.000.jsonl",
    ]
    assert all(path.stat().st_size <= 1000 for path in [*rotated(file), file.path])
    assert every_line(file) == [line(n) for n in range(25)]


def test_a_line_longer_than_the_limit_gets_a_file_of_its_own(
    tmp_path: Path, make: Maker, clock: WallClock
) -> None:
    file = make(tmp_path / "kept.jsonl", Rotation(max_bytes=1000, max_backups=0))
    file.append(line(0))
    clock.time += 1
    file.append(line(1, size=5000))
    clock.time += 1
    file.append(line(2))
    assert [read(path) for path in reversed(rotated(file))] == [[line(0)], [line(1, 5000)]]
    assert read(file.path) == [line(2)]


def test_only_the_newest_max_backups_are_kept(
    tmp_path: Path, make: Maker, clock: WallClock
) -> None:
    file = make(tmp_path / "kept.jsonl", Rotation(max_bytes=1000, max_backups=2))
    for n in range(60):
        clock.time += 1
        file.append(line(n))
    assert len(rotated(file)) == 2
    assert every_line(file) == [line(n) for n in range(30, 60)]  # the newest three files


def test_left_running_the_file_takes_bounded_disk(
    tmp_path: Path, make: Maker, clock: WallClock
) -> None:
    rotation = Rotation(max_bytes=10_000, max_backups=3)
    file = make(tmp_path / "kept.jsonl", rotation)
    for n in range(5_000):  # 500 KB written
        clock.time += 0.1
        file.append(line(n))
    used = sum(entry.stat().st_size for entry in os.scandir(tmp_path))
    assert used <= (1 + rotation.max_backups) * rotation.max_bytes


def test_rotated_files_older_than_max_age_are_deleted(
    tmp_path: Path, make: Maker, clock: WallClock
) -> None:
    rotation = Rotation(max_bytes=1000, max_backups=0, max_age_s=2 * DAY)
    file = make(tmp_path / "kept.jsonl", rotation)
    for n in range(40):  # ten lines a day, a file a day
        clock.time += DAY / 10
        file.append(line(n))
    assert len(rotated(file)) == 3  # rotated after 1.1, 2.1 and 3.1 days
    file.mill()  # at 4 days: the first is older than two days
    assert len(rotated(file)) == 2
    assert every_line(file) == [line(n) for n in range(10, 40)]


def test_rotated_files_are_gzipped_when_asked(
    tmp_path: Path, make: Maker, clock: WallClock
) -> None:
    rotation = Rotation(max_bytes=1000, max_backups=0, compress=True)
    file = make(tmp_path / "kept.jsonl", rotation)
    for n in range(25):
        clock.time += 1
        file.append(line(n))
    assert [path.name for path in rotated(file)] == [
        "kept-2024-05-01T12-00-21.000.jsonl.gz",
        "kept-2024-05-01T12-00-11.000.jsonl.gz",
    ]
    assert every_line(file) == [line(n) for n in range(25)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [p.name for p in rotated(file)] + ["kept.jsonl"]
    )


def test_the_mill_finishes_what_a_crash_interrupted(
    tmp_path: Path, make: Maker, clock: WallClock
) -> None:
    old = tmp_path / "kept-2024-04-30T10-00-00.000.jsonl"
    old.write_bytes(line(1))
    torn = tmp_path / "kept-2024-04-30T10-00-00.000.jsonl.gz.tmp"  # a compression cut short
    torn.write_bytes(b"\x1f\x8b partial")
    done = tmp_path / "kept-2024-04-29T10-00-00.000.jsonl"  # compressed, not yet unlinked
    done.write_bytes(line(0))
    (tmp_path / (done.name + ".gz")).write_bytes(gzip.compress(line(0)))
    other = tmp_path / "unrelated-2024-04-30T10-00-00.000.jsonl"
    other.write_bytes(b"not ours\n")

    file = make(tmp_path / "kept.jsonl", Rotation(max_backups=5, compress=True))
    file.append(line(2))  # the first open mills what an earlier run left
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kept-2024-04-29T10-00-00.000.jsonl.gz",
        "kept-2024-04-30T10-00-00.000.jsonl.gz",
        "kept.jsonl",
        "unrelated-2024-04-30T10-00-00.000.jsonl",
    ]
    assert every_line(file) == [line(0), line(1), line(2)]


def test_a_file_already_over_the_limit_is_rotated_at_the_next_line(
    tmp_path: Path, make: Maker, clock: WallClock
) -> None:
    path = tmp_path / "kept.jsonl"
    path.write_bytes(b"".join(line(n) for n in range(30)))  # left by a run without rotation
    file = make(path, Rotation(max_bytes=1000, max_backups=1))
    file.append(line(30))
    assert [len(read(p)) for p in rotated(file)] == [30]
    assert read(path) == [line(30)]


def test_two_rotations_within_a_millisecond_never_overwrite_each_other(
    tmp_path: Path, make: Maker, clock: WallClock
) -> None:
    file = make(tmp_path / "kept.jsonl", Rotation(max_bytes=100, max_backups=0))
    for n in range(4):  # every line rotates the file, the clock standing still
        file.append(line(n))
    assert len(rotated(file)) == 3
    assert every_line(file) == [line(n) for n in range(4)]


@pytest.fixture
def kolkata() -> Iterator[None]:
    """The process in UTC+05:30 for the test (no daylight saving there)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.mark.parametrize(
    ("localtime", "name"),
    [(False, "kept-2024-05-01T12-00-00.500.jsonl"), (True, "kept-2024-05-01T17-30-00.500.jsonl")],
    ids=["utc", "localtime"],
)
def test_rotated_files_are_named_in_utc_unless_localtime(
    tmp_path: Path, make: Maker, clock: WallClock, kolkata: None, localtime: bool, name: str
) -> None:
    rotation = Rotation(max_bytes=100, max_backups=0, max_age_s=DAY, localtime=localtime)
    file = make(tmp_path / "kept.jsonl", rotation)
    file.append(line(0))
    clock.time = T0 + 0.5
    file.append(line(1))
    assert [path.name for path in rotated(file)] == [name]
    clock.time = T0 + DAY + 1  # read back in the same zone: a day old now
    file.mill()
    assert rotated(file) == []
