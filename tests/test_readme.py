"""The README as a newcomer reads it: short, every link to a file that exists, and every command in it either run
by `.ci/run` (the install and test commands) or parsed here (`--help` succeeds, and its options are the
command's own)."""

import contextlib
import functools
import importlib
import io
import re
import shlex
from pathlib import Path

import pytest
from test_cli import CONFIG_CLASSES

from align.cli import COMMANDS
from align.config import ConfigError, build_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def bash_commands(text: str) -> list[list[str]]:
    """Every command of the bash blocks of a Markdown `text`, continuation lines joined, `a && b` split, the
    variable of a `for NAME in A B; do` loop replaced by its first value."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        variables: dict[str, str] = {}
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if loop := re.match(r"for (\w+) in (\S+)", line):
                variables[loop.group(1)] = loop.group(2)
                line = line.split("; do", 1)[-1].strip() if "; do" in line else ""
            for name, value in variables.items():
                line = line.replace("${" + name + "}", value).replace("$" + name, value)
            if line and not line.startswith("#") and line != "done":
                commands += [shlex.split(part) for part in line.split("&&") if part.strip()]
    return commands


def readme_commands() -> list[list[str]]:
    return bash_commands(README)


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


@functools.cache
def help_problem(name: str) -> str | None:
    """Why `align NAME --help` fails, or None (in this process: test_cli runs the console script itself)."""
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            importlib.import_module(COMMANDS[name][0]).main(["--help"], prog=f"align {name}")
    except SystemExit as done:
        return None if done.code in (0, None) else output.getvalue()[-2000:]
    return None


def parses(command: list[str]) -> str | None:
    """Why the `align` part of `command` does not parse (an unknown command or option, a value of the wrong kind,
    a failing --help), or None. A file it names may be the user's: its absence is the stage's, at run time."""
    name, *arguments = align_part(command)
    if name in ("--help", "--version"):
        return None
    if name not in COMMANDS:
        return f"unknown command {name!r}"
    if (problem := help_problem(name)) or "--help" in arguments:
        return problem
    elided = "..." in arguments  # "..." elides options in the docs: a required one may be among them
    arguments = [argument for argument in arguments if argument != "..."]
    if name in ("report", "bench"):
        return None  # positional arguments; --help above is their check
    config_class = getattr(importlib.import_module(COMMANDS[name][0]), CONFIG_CLASSES[name])
    if arguments and arguments[0].isdigit():
        arguments = ["--round", *arguments]
    try:
        build_config(config_class, arguments)
    except ConfigError as error:
        if str(error).startswith("--config: no file at") and "recipes/configs" not in str(error):
            return None  # the user's own YAML file
        return None if elided and ": required" in str(error) else str(error)
    return None


@pytest.mark.parametrize("command", [c for c in readme_commands() if align_part(c)], ids=shlex.join)
def test_every_readme_command_parses(command):
    """`--help` of the command succeeds, and the README's own options are ones it takes."""
    problem = parses(command)
    assert problem is None, f"{shlex.join(command)}: {problem}"
