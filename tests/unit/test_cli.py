"""The command line through click's CliRunner: exit codes and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cni_lab.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_validate_a_good_scenario() -> None:
    code, output = run("validate", str(ROOT / "scenarios/two-nodes.yaml"))
    assert code == 0
    assert "10.244.1.2" in output and "is valid" in output


def test_validate_by_builtin_name() -> None:
    assert run("validate", "single-node")[0] == 0


def test_bad_scenario_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnodes:\n  - name: node1\n    podCidr: 10.244.0.0/24\n")
    code, output = run("validate", str(bad))
    assert code == 2
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in output
    assert f"{bad}: nodes[0].podCidr: unknown key (did you mean 'podCIDR'?)" in lines[0]


def test_plan_shows_ip_commands() -> None:
    code, output = run("plan", str(ROOT / "scenarios/two-nodes.yaml"))
    assert code == 0
    assert "route add 10.244.1.0/24 via 192.168.1.3 dev eth0" in output


@pytest.mark.parametrize("command", [["up", "two-nodes"], ["status"], ["down", "--all"], ["exec", "node1", "--", "true"]])
def test_not_root_says_how_to_run_it(command: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    code, output = run(*command)
    assert code == 2
    assert "needs root" in output and "sudo cni-lab" in output
    assert len(output.strip().splitlines()) == 1


def test_python_dash_m_works_like_the_script() -> None:
    done = subprocess.run([sys.executable, "-m", "cni_lab", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and "cni-lab, version" in done.stdout


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text().strip().splitlines()[-1]
    # the README's command, run as root without sudo
    readme_lines = [line.strip() for line in readme.splitlines()]
    assert any(line.replace("sudo ", "") == ci for line in readme_lines if "pytest" in line), ci


def test_every_command_is_loaded_from_the_module_the_group_names() -> None:
    # the group imports only the module of the command being run: the map must be exact
    import importlib

    from cni_lab.cli import app

    for module in set(app.COMMANDS.values()):
        importlib.import_module(f"cni_lab.cli.{module}")
    registered = {name: cmd.callback.__module__.rsplit(".", 1)[1] for name, cmd in app.cli.commands.items()
                  if cmd.callback is not None}
    assert registered == app.COMMANDS


def test_check_and_down_start_without_pyroute2_or_the_pictures() -> None:
    # start-up is a third of a 100-pod `check` (bench/): keep what it imports small
    code = ("import sys; from cni_lab.cli import app; app.cli.get_command(None, 'check'); "
            "app.cli.get_command(None, 'down'); print(' '.join(sorted(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    # (the name `pyroute2` itself may be registered: kernel/__init__.py, without running the package)
    assert not [m for m in loaded if m.startswith(("pyroute2.", "cni_lab.report.html", "cni_lab.lesson"))]


def test_a_node_with_many_pods_is_one_row_with_its_range(tmp_path: Path) -> None:
    scenario = tmp_path / "many.yaml"
    scenario.write_text("name: many\ndataplane: host-gw\nnodes:\n  - {name: node, count: 2, pods: 30}\n"
                        "  - {name: small, pods: [web]}\n")
    code, output = run("plan", str(scenario))
    assert code == 0
    assert output.count("30 pods") == 2 and "10.244.0.2 … .31" in output
    assert "pod-17 " not in output.split("# cnilab-")[0]  # the table lists no pod of a big node
    assert "web 10.244.2.2" in output


def test_up_loads_pyroute2s_messages_without_its_package_init_which_still_runs_when_asked() -> None:
    """kernel/__init__.py: writing needs pyroute2's message classes, not the ~0.1 s of every API
    its package __init__ imports; a name of the package (IPRoute) still loads it all."""
    code = ("import sys; import cni_lab.kernel.rtnl; before = 'pyroute2.ndb' in sys.modules or 'pyroute2.iproute' in sys.modules; "
            "from pyroute2 import IPRoute, Conntrack; import pyroute2; "
            "print(before, IPRoute.__name__, Conntrack.__name__, pyroute2.__version__ != 'unknown')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "IPRoute", "Conntrack", "True"]


def test_ipv6_addresses_are_printed_as_they_are() -> None:
    """rich reads `:cd:` as an emoji code: fd00:cd::1 came out with a CD in it."""
    from cni_lab.cli.app import err, out

    for console in (out, err):
        console.begin_capture()
        console.print("pod fd00:cd::1 and fd00:10:244:ok::2")
        assert console.end_capture().strip() == "pod fd00:cd::1 and fd00:10:244:ok::2"
