"""The lean `overnet` launcher (cli/launcher.py): what setup.sh writes over pip's wrapper."""

from __future__ import annotations

import os
import subprocess
import sys

from overnet.cli import launcher


def test_launcher_runs_hot_commands_without_site_and_hands_the_rest_to_click(tmp_path) -> None:
    exe = str(tmp_path / "overnet")
    assert launcher.main([exe]) == 0
    assert os.stat(exe).st_mode & 0o777 == 0o755
    with open(exe) as f:
        assert f.readline() == f"#!{sys.executable} -IS\n"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    # `ps` takes the lean path (no site-packages needed)...
    ps = subprocess.run([exe, "-H", f"unix://{tmp_path}/none.sock", "ps"], capture_output=True,
                        text=True, env=env, timeout=30, check=False)
    assert ps.returncode == 1 and "cannot reach the agent" in ps.stderr, ps.stderr
    # ...anything else reaches click, which lives in site-packages.
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, env=env,
                             timeout=30, check=False)
    assert version.returncode == 0 and "version" in version.stdout, version.stderr
    bad = subprocess.run([exe, "ps", "--nope"], capture_output=True, text=True, env=env,
                         timeout=30, check=False)
    assert bad.returncode == 2 and "No such option '--nope'" in bad.stderr


def test_launcher_usage() -> None:
    assert launcher.main([]) == 2
