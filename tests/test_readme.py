"""The README as a newcomer reads it: short, every link to a file that exists, and every command in it either run
by `.ci/run` (the install and test commands) or parsed here (`--help` succeeds, and its options are the
command's own)."""

import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import CONFIG_CLASSES

from align.cli import COMMANDS
from align.config import ConfigError, build_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[list[str]]:
    """Every command of the README's bash blocks, continuation lines joined, `a && b` split."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            commands += [shlex.split(part) for part in line.split("&&") if part.strip()]
    return commands


def align_part(command: list[str]) -> list[str] | None:
    """`align X ...` of a command: as typed, after `accelerate launch [options] -m`, or a recipe script's."""
    if command[0] == "align":
        return command[1:]
    if command[:2] == ["accelerate", "launch"]:
        if "-m" in command:
            index = command.index("-m")
            assert command[index + 1] == "align", command
            return command[index + 2 :]
        script = next(word for word in command if word.endswith(".py"))
        name = Path(script).stem
        arguments = command[command.index(script) + 1 :]
        return ["round", *arguments] if name == "rlhf_round" else [name.replace("_", "-"), *arguments]
    return None


def test_the_readme_is_short_and_its_links_resolve():
    assert len(README.splitlines()) < 150
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


def test_the_install_and_test_commands_are_the_ones_ci_runs():
    commands = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert ["pip", "install", "torch==2.13.0"] in commands and "pip install -q torch==2.13.0" in ci
    assert ["pip", "install", "-e", ".[dev]", "-c", "constraints.txt"] in commands
    assert 'pip install -q -e ".[dev]" -c constraints.txt' in ci
    assert ["python", "-m", "pytest", "-q"] in commands and "python -m pytest -q" in ci
    assert "mkdocs build --strict" in ci and "mkdocs build --strict" in README


@pytest.mark.parametrize("command", [c for c in readme_commands() if align_part(c)], ids=shlex.join)
def test_every_readme_command_parses(command):
    """`--help` of the command succeeds, and the README's own options are ones it takes."""
    name, *arguments = align_part(command)
    assert name in COMMANDS, name
    done = subprocess.run([sys.executable, "-m", "align", name, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    if name in ("report", "bench"):
        return  # positional arguments; --help above is their check
    config_class = getattr(importlib.import_module(COMMANDS[name][0]), CONFIG_CLASSES[name])
    if arguments and arguments[0].isdigit():
        arguments = ["--round", *arguments]
    try:
        build_config(config_class, arguments)
    except ConfigError as error:  # an unknown option or a bad value; a missing file is the stage's, at run time
        pytest.fail(f"{shlex.join(command)}: {error}")
