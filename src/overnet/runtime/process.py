"""The container runner's old single module, kept importable while callers move to the new
ones (runtime.spec, runtime.spawn, runtime.confine, runtime.mountswap, runtime.identity)."""

from __future__ import annotations

from .confine import ContainerStartError, enter
from .identity import alive, open_pidfd, pid_in_container, pids_in_netns, proc_start_time
from .mountswap import replace_files, replace_hosts, replace_hosts_many
from .spawn import Stdio, exec_in, exec_popen, exit_code, run_foreground, spawn
from .spec import (
                   DEFAULT_PATH,
                   SYSTEMD_RESOLV,
                   ContainerSpec,
                   container_env,
                   filter_resolv_conf,
                   prepare_files,
)

__all__ = [
    "DEFAULT_PATH", "SYSTEMD_RESOLV", "ContainerSpec", "ContainerStartError", "Stdio", "alive",
    "container_env", "enter", "exec_in", "exec_popen", "exit_code", "filter_resolv_conf",
    "open_pidfd", "pid_in_container", "pids_in_netns", "prepare_files", "proc_start_time",
    "replace_files", "replace_hosts", "replace_hosts_many", "run_foreground", "spawn",
]
