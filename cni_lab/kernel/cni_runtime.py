"""A minimal CNI runtime: what libcni does for kubelet/containerd, following the CNI spec.

For a network configuration list, ADD runs each plugin in order, giving each the previous one's
result as `prevResult`; DEL runs them in reverse with the ADD result. A plugin is executed with
CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME and CNI_PATH in its environment and its
network configuration on stdin; it answers with a result, or an error `{code, msg, details}`.
The plugins run inside the node's namespace (`ip netns exec`), as they would on the node itself.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from cni_lab import names
from cni_lab.errors import LabError

TIMEOUT = 30


class CniError(LabError):
    pass


def _plugin_config(conflist: dict[str, Any], plugin: dict[str, Any], prev: dict[str, Any] | None,
                   state: Path) -> dict[str, Any]:
    conf = {"cniVersion": conflist.get("cniVersion"), "name": conflist.get("name"), **plugin}
    ipam = conf.get("ipam")
    if isinstance(ipam, dict) and isinstance(ipam.get("dataDir"), str) and not ipam["dataDir"].startswith("/"):
        # a relative dataDir lives in the lab's state folder: nothing goes to /var/lib/cni
        conf["ipam"] = {**ipam, "dataDir": str(state / ipam["dataDir"])}
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def _exec(command: str, node_netns: str, pod_netns: str | None, container_id: str, ifname: str, cni_path: str,
          conf: dict[str, Any], pod: str) -> dict[str, Any]:
    plugin = conf["type"]
    binary = os.path.join(cni_path, plugin)
    if not os.access(binary, os.X_OK):
        # libcni's own words for a type it cannot find
        raise CniError(f"CNI {command} for pod {pod}: failed to find plugin \"{plugin}\" in path [{cni_path}]")
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": f"/run/netns/{pod_netns}" if pod_netns else "",
        "CNI_IFNAME": ifname,
        "CNI_PATH": cni_path,
    }
    done = subprocess.run(["ip", "netns", "exec", node_netns, binary], input=json.dumps(conf), env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    out = done.stdout.strip()
    if done.returncode != 0:
        try:
            error = json.loads(out)
            msg = error.get("msg", "")
            details = f": {error['details']}" if error.get("details") else ""
            code = f" (code {error['code']})" if "code" in error else ""
        except ValueError:
            msg, details, code = (done.stderr or out).strip() or f"exit status {done.returncode}", "", ""
        raise CniError(f"CNI {command} for pod {pod}: plugin {plugin}: {msg}{details}{code}")
    if not out:
        return {}
    try:
        result = json.loads(out)
    except ValueError:
        raise CniError(f"CNI {command} for pod {pod}: plugin {plugin} printed no JSON result: {out[:200]}") from None
    return result


def add(node_netns: str, pod_netns: str, container_id: str, ifname: str, cni_path: str, conflist: dict[str, Any],
        state: Path, pod: str) -> dict[str, Any]:
    """ADD through the whole list; returns the final result. On failure, DELs what was added."""
    prev: dict[str, Any] | None = None
    added: list[dict[str, Any]] = []
    try:
        for plugin in conflist["plugins"]:
            conf = _plugin_config(conflist, plugin, prev, state)
            added.append(plugin)
            prev = _exec("ADD", node_netns, pod_netns, container_id, ifname, cni_path, conf, pod)
    except BaseException:
        # the spec's cleanup: DEL what the list added, in reverse, ignoring what fails
        _delete(node_netns, pod_netns, container_id, ifname, cni_path, conflist, added, prev, state, pod, strict=False)
        raise
    return prev or {}


def _delete(node_netns: str, pod_netns: str | None, container_id: str, ifname: str, cni_path: str,
            conflist: dict[str, Any], plugins: list[dict[str, Any]], prev: dict[str, Any] | None, state: Path,
            pod: str, strict: bool) -> None:
    errors = []
    for plugin in reversed(plugins):
        try:
            _exec("DEL", node_netns, pod_netns, container_id, ifname, cni_path,
                  _plugin_config(conflist, plugin, prev, state), pod)
        except (CniError, OSError, subprocess.SubprocessError) as e:
            errors.append(str(e))
    if errors and strict:
        raise CniError(*errors)


def record(path: Path, node_netns: str, pod_netns: str, container_id: str, ifname: str, cni_path: str,
           conflist: str, result: dict[str, Any]) -> None:
    """What DEL needs later, with the result `explain` shows."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "containerId": container_id, "nodeNetns": node_netns, "netns": pod_netns, "ifname": ifname,
        "cniPath": cni_path, "conflist": conflist, "result": result,
    }, indent=2))


def delete_recorded(state: Path) -> list[str]:
    """DEL every pod recorded under the lab's state folder (before its namespaces go). Returns errors."""
    errors = []
    for path in sorted(state.glob(names.CNI_RESULTS)):
        try:
            rec = json.loads(path.read_text())
            conflist = json.loads((state / rec["conflist"]).read_text())
            netns = rec["netns"] if os.path.exists(f"/run/netns/{rec['netns']}") else None
            _delete(rec["nodeNetns"], netns, rec["containerId"], rec["ifname"], rec["cniPath"], conflist,
                    conflist["plugins"], rec["result"], state, path.stem, strict=True)
            path.unlink()
        except (OSError, ValueError, KeyError, LabError) as e:
            errors.append(f"{path.name}: {e}")
    return errors


def check(rec_path: Path, state: Path) -> list[str]:
    """CNI CHECK for one recorded pod: each plugin verifies what it set up. Returns problems."""
    rec = json.loads(rec_path.read_text())
    conflist = json.loads((state / rec["conflist"]).read_text())
    problems = []
    for plugin in conflist["plugins"]:
        try:
            _exec("CHECK", rec["nodeNetns"], rec["netns"], rec["containerId"], rec["ifname"], rec["cniPath"],
                  _plugin_config(conflist, plugin, rec["result"], state), rec_path.stem)
        except CniError as e:
            problems.append(str(e))
    return problems
