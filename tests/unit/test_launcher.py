"""The `overnet` executable (cli/launcher.py): what setup.sh writes over pip's wrapper, the
compiled front with the lean Python launcher beside it, or that launcher alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from overnet.cli import launcher


def check_commands(exe: str, tmp_path) -> None:
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
    assert "Usage: overnet ps" in bad.stderr       # click's name for it, whatever the file


def test_the_front_with_the_python_launcher_beside_it(tmp_path) -> None:
    exe = str(tmp_path / "overnet")
    assert launcher.main([exe]) == 0
    with open(exe, "rb") as f:
        assert f.read(4) == b"\x7fELF"              # gcc is in scripts/setup.sh
    with open(tmp_path / launcher.FALLBACK) as f:
        assert f.readline() == f"#!{sys.executable} -IS\n"
    with open(tmp_path / launcher.REAPER, "rb") as f:
        assert f.read(4) == b"\x7fELF"              # runtime/supervise.py execs it
    for path in (exe, tmp_path / launcher.FALLBACK, tmp_path / launcher.REAPER):
        assert os.stat(path).st_mode & 0o777 == 0o755
    check_commands(exe, tmp_path)


def test_without_a_compiler_overnet_is_the_python_launcher(tmp_path, monkeypatch,
                                                           capsys) -> None:
    (tmp_path / "nothing").mkdir()
    path = os.environ.get("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))     # no cc to be found
    exe = str(tmp_path / "overnet")
    assert launcher.main([exe]) == 0
    assert "no C compiler" in capsys.readouterr().err
    with open(exe) as f:
        assert f.readline() == f"#!{sys.executable} -IS\n"
    monkeypatch.setenv("PATH", path)
    check_commands(exe, tmp_path)


@pytest.mark.parametrize("argv", [[], ["a", "b"]])
def test_launcher_usage(argv) -> None:
    assert launcher.main(argv) == 2
