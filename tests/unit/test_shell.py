"""Shell polish: every command's help has an example; completion scripts; the CI files; the Vagrantfile."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cni_lab.cli import cli
from cni_lab.cli.app import COMMANDS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_help_has_an_example(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output, command


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str) -> None:
    result = CliRunner().invoke(cli, ["completion", shell])
    assert result.exit_code == 0 and "_CNI_LAB_COMPLETE" in result.output


def test_completion_offers_commands_and_builtin_scenarios() -> None:
    from click.shell_completion import ShellComplete

    comp = ShellComplete(cli, {}, "cni-lab", "_CNI_LAB_COMPLETE")
    assert {"up", "down", "check", "demo", "doctor"} <= {c.value for c in comp.get_completions([], "")}
    assert "two-nodes" in {c.value for c in comp.get_completions(["up"], "two")}


def test_containerfile_and_workflow_use_the_one_setup_script() -> None:
    container = (ROOT / "Containerfile").read_text()
    assert "RUN ./scripts/setup.sh" in container and "--privileged" in container
    workflow = yaml.safe_load((ROOT / ".github/workflows/cni-lab.yml").read_text())
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    runs = " ".join(s.get("run", "") for s in steps)
    assert "sudo ./scripts/setup.sh --test && sudo .venv/bin/pytest" in runs
    assert "cni-lab run" in runs and "--junit" in runs and "--report" in runs
    uploads = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads and all(f in uploads[0]["with"]["path"] for f in ("check.json", "junit.xml", "report.html"))
    assert "./scripts/setup.sh" in (ROOT / "Vagrantfile").read_text()


def test_every_package_is_in_the_wheel() -> None:
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "cni_lab").rglob("__init__.py")}
    assert found <= listed, found - listed


@pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby is not installed (setup.sh --test installs it)")
def test_vagrantfile_is_valid_ruby() -> None:
    done = subprocess.run(["ruby", "-c", str(ROOT / "Vagrantfile")], capture_output=True, text=True)
    assert done.returncode == 0 and "Syntax OK" in done.stdout


@pytest.mark.skipif(shutil.which("vagrant") is None,
                    reason="Debian's vagrant is not installed (its dependencies do not install on this Debian mirror)")
def test_vagrant_validates_the_vagrantfile() -> None:
    checked = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
