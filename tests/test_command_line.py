"""The command lines as an operator meets them, run for real: ``python -m services`` (the image's
entry point), ``python -m devstack`` (``make run``), their console scripts, and ``make``'s list.

Help goes to stdout with status 0; a word they do not know is named on stderr, with the usage,
status 2; ``--version`` is the installed distribution's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from shared.command_line import DISTRIBUTION

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Each command line, as `python -m`, with the first line of its usage.
MODULES = {"services": "usage: signage COMMAND", "devstack": "usage: python -m devstack [COMMAND]"}


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_module(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", module, *args)


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("ask", ["--help", "-h", "help"])
def test_help_is_the_usage_on_stdout_and_exits_0(module: str, ask: str) -> None:
    result = run_module(module, ask)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(MODULES[module])
    assert "unknown" not in result.stderr


def test_help_lists_every_command_of_the_services_command_line() -> None:
    usage = run_module("services", "--help").stdout
    for command in ("registry", "provisioning", "device-gateway", "heartbeat", "setup", "signing-key"):
        assert re.search(rf"^  .*\b{command}\b", usage, re.MULTILINE), command


def test_help_after_a_command_is_the_usage_too_and_runs_nothing() -> None:
    # Without help, `setup` would try the database and fail; with it, it only explains.
    result = run_module("services", "setup", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(MODULES["services"])


@pytest.mark.parametrize(
    ("module", "args", "problem"),
    [
        ("services", ["bogus"], "unknown command: bogus"),
        ("services", ["--bogus"], "unknown option: --bogus"),
        ("services", ["registry", "extra"], "unexpected argument: extra"),
        ("services", ["setup", "--fast"], "unknown option: --fast"),
        ("services", [], "a command is needed"),
        ("devstack", ["bogus"], "unknown command: bogus"),
        ("devstack", ["--bogus"], "unknown option: --bogus"),
        ("devstack", ["nats-config", "--json"], "unknown option: --json"),
        ("devstack", ["nats-config", "--helm", "extra"], "unexpected argument: extra"),
        ("devstack", ["settings", "extra"], "unexpected argument: extra"),
    ],
)
def test_what_the_command_line_does_not_know_is_named_on_stderr_with_the_usage_and_exits_2(
    module: str, args: list[str], problem: str
) -> None:
    result = run_module(module, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    # The problem on a line of its own, then the usage; nothing else but warnings of libraries.
    lines = result.stderr.splitlines()
    assert problem in lines
    assert lines[lines.index(problem) + 2].startswith(MODULES[module])
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("module", MODULES)
def test_version_is_the_installed_distributions(module: str) -> None:
    assert PYPROJECT["name"] == DISTRIBUTION
    # A stale install (an older version's metadata) would answer for code it no longer runs.
    assert version(DISTRIBUTION) == PYPROJECT["version"]
    result = run_module(module, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{DISTRIBUTION} {PYPROJECT['version']}\n"


def test_the_commands_still_answer_as_before() -> None:
    signing = run_module("services", "signing-key")
    assert signing.returncode == 0, signing.stderr
    assert re.fullmatch(r"TOKEN_SIGNING_KEY=\S+\nTOKEN_VERIFY_KEYS=\S+\n", signing.stdout)
    settings = run_module("devstack", "settings")
    assert settings.returncode == 0, settings.stderr
    assert settings.stdout.startswith("| variable | type | default | accepted | meaning |\n")


@pytest.mark.parametrize("script", sorted(PYPROJECT["scripts"]))
def test_each_console_script_is_installed_and_answers_help(script: str, tmp_path: Path) -> None:
    module = PYPROJECT["scripts"][script].split(":")[0].removesuffix(".__main__")
    path = Path(sys.executable).parent / script
    # Missing: the environment was installed before the script was declared (pip install -e .).
    assert path.is_file(), f"{path} missing: reinstall the project"
    # From elsewhere, as an operator runs it: the installed package alone, not the checkout.
    result = subprocess.run(
        [str(path), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == run_module(module, "--help").stdout
    assert result.stdout.startswith(f"usage: {script} ")


def test_the_console_script_is_the_services_command_line() -> None:
    assert PYPROJECT["scripts"] == {"signage": "services.__main__:main"}


def makefile_targets() -> dict[str, str]:
    """Each .PHONY target of the Makefile with its description: the first line of the comment
    right above its rule ("" when it has none)."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    phony = next(line for line in lines if line.startswith(".PHONY:")).split(":", 1)[1].split()
    targets = {}
    for target in phony:
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
        start = at
        while start > 0 and lines[start - 1].startswith("# "):
            start -= 1
        targets[target] = lines[start][2:] if start < at else ""
    return targets


@pytest.mark.parametrize("command", [["make", "-s"], ["make", "-s", "help"]])
def test_make_lists_every_described_target(command: list[str]) -> None:
    result = run(*command)
    assert result.returncode == 0, result.stderr
    listed = dict(
        line.strip().split(maxsplit=1) for line in result.stdout.splitlines() if line.startswith("  ")
    )
    described = {target: text for target, text in makefile_targets().items() if text}
    assert {"help", "run", "test", "lint", "install"} <= described.keys()
    for target, text in described.items():
        assert listed.get(target) == text, target
