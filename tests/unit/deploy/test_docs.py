"""The deployment docs and the kit's README name files that exist and commands that run: every
relative link and every repository path in backticks exists, and every `agent-sampler`
command line in a shell block parses with the CLI's own parser (flags and subcommands as they
are), every `otelcol --config` names files of the repository; the kit's own sampler commands
use flags that `agent-sampler run --help` lists."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy_kit import ROOT, compose, parse_cli

DOCS = [ROOT / "docs" / "deployment.md", ROOT / "deploy" / "README.md", ROOT / "README.md"]
PATH_PREFIXES = ("config/", "deploy/", "tests/", "benchmarks/", "docs/", "scripts/")


def shell_commands(text: str) -> list[str]:
    """Commands of ```sh blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("  #", 1)[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_paths_exist(doc: Path) -> None:
    text = doc.read_text()
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (doc.parent / target).exists(), f"{doc.name}: link to {target}"
    for token in re.findall(r"`([^`\s]+)`", text):
        if token.startswith(PATH_PREFIXES) and "*" not in token and "<" not in token:
            path = token.split(":")[0].rstrip(".,")
            assert (ROOT / path).exists(), f"{doc.name}: {token}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_commands_match_the_cli_and_the_files(doc: Path) -> None:
    seen = 0
    for command in shell_commands(doc.read_text()):
        words = shlex.split(command)
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            words.pop(0)  # VAR=value before the command
        if not words:
            continue
        if words[0] in ("agent-sampler", ".venv/bin/agent-sampler"):
            args = parse_cli(words[1:])
            if getattr(args, "config", None):
                assert (ROOT / args.config).exists(), command
            seen += 1
        elif words[0] == "otelcol":
            configs = [w.split("=", 1)[1] for w in words if w.startswith("--config=")]
            configs += [words[i + 1] for i, w in enumerate(words) if w == "--config"]
            assert configs, command
            for config in configs:
                assert (ROOT / config).exists(), command
            seen += 1
    if doc.name == "deployment.md":
        assert seen >= 4


def run_help() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "sampler", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def test_the_local_recipe_and_compose_use_flags_of_run_help() -> None:
    """The flags the kit passes to `agent-sampler run`, as `agent-sampler run --help` lists
    them: the local recipe's sampler command and the compose file's."""
    script = (ROOT / "deploy" / "local" / "run.sh").read_text().replace("\\\n", " ")
    (recipe,) = re.findall(r"-m sampler run (.*?)\)", script)
    compose_command = compose()["services"]["sampler"]["command"]
    used = set(re.findall(r"(--[a-z-]+)", recipe)) | {w for w in compose_command if w[:2] == "--"}
    listed = set(re.findall(r"(--[a-z-]+)", run_help()))
    assert used and used <= listed, used - listed
    assert "--config" in used
