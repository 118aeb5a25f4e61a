"""`overnet cni install` into temporary directories: the executables run with an empty
environment, the conflist chains portmap, and a refused install writes nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from overnet.cli.main import cli
from overnet.cni import install as installer

PORTMAP = "/usr/lib/cni/portmap"


def fake_portmap(directory, versions: list[str]) -> None:
    """A stand-in portmap that answers VERSION only (what install asks it)."""
    path = os.path.join(directory, "portmap")
    with open(path, "w") as f:
        f.write("#!/bin/sh\necho '" + json.dumps({"cniVersion": versions[-1],
                                                  "supportedVersions": versions}) + "'\n")
    os.chmod(path, 0o755)


@pytest.fixture
def dirs(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_portmap(bin_dir, ["0.3.1", "0.4.0", "1.0.0"])
    return str(bin_dir), str(tmp_path / "etc" / "net.d")


def test_install_writes_plugins_and_conflist(dirs):
    bin_dir, conf_dir = dirs
    res = CliRunner().invoke(cli, ["-H", "unix:///run/x/overnet.sock", "cni", "install",
                                   "--bin-dir", bin_dir, "--conf-dir", conf_dir,
                                   "--network", "foobar"])
    assert res.exit_code == 0, res.output
    with open(os.path.join(conf_dir, "foobar.conflist")) as f:
        conf = json.load(f)
    assert conf["cniVersion"] == "1.0.0" and conf["name"] == "foobar"
    assert [p["type"] for p in conf["plugins"]] == ["overnet-cni", "portmap"]
    assert conf["plugins"][0]["network"] == "foobar"
    assert conf["plugins"][0]["agentSocket"] == "/run/x/overnet.sock"
    with open(os.path.join(bin_dir, "overnet-cni"), "rb") as f:
        assert f.read(4) == b"\x7fELF"       # the compiled shim (gcc is in scripts/setup.sh)
    for name in ("overnet-cni", "flannel", "overnet-cni-python"):
        exe = os.path.join(bin_dir, name)
        out = subprocess.run([exe], env={"CNI_COMMAND": "VERSION"}, input=b"",
                             capture_output=True, timeout=30, check=False)
        assert out.returncode == 0, out.stderr
        assert "1.1.0" in json.loads(out.stdout)["supportedVersions"]
    again = CliRunner().invoke(cli, ["cni", "install", "--bin-dir", bin_dir,
                                     "--conf-dir", conf_dir, "--network", "foobar"])
    assert again.exit_code == 0, again.output
    assert sorted(os.listdir(bin_dir)) == ["flannel", "overnet-cni", "overnet-cni-python",
                                           "portmap"]


def test_without_a_compiler_overnet_cni_is_the_python_plugin(tmp_path, dirs, monkeypatch,
                                                             capsys):
    bin_dir, conf_dir = dirs
    (tmp_path / "nothing").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))     # no cc to be found
    assert shutil.which("cc") is None and shutil.which("gcc") is None
    installer.install([bin_dir], conf_dir, "overnet", "1.0.0")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no C compiler" in err[0] and "Python plugin" in err[0]
    with open(os.path.join(bin_dir, "overnet-cni")) as f:
        script = f.read()
    assert script.startswith("#!") and installer.MARK in script
    out = subprocess.run([os.path.join(bin_dir, "overnet-cni")], env={"CNI_COMMAND": "VERSION"},
                         input=b"", capture_output=True, timeout=30, check=False)
    assert out.returncode == 0 and "1.1.0" in json.loads(out.stdout)["supportedVersions"]


def test_a_shim_that_does_not_compile_says_why(tmp_path):
    bad = tmp_path / "bad.c"
    bad.write_text("int main(void) { return missing_function_x(); }\n")
    shim, why = installer.compile_shim(str(tmp_path), str(bad))
    assert shim is None and "bad.c" in why


@pytest.mark.parametrize("args,word", [
    (["--network", "Bad Name"], "'Bad Name'"),
    (["--cni-version", "0.2.0"], "0.2.0"),
    (["--cni-version", "1.1.0"], "use --cni-version 1.0.0"),
])
def test_refused_install_writes_nothing(dirs, args, word):
    bin_dir, conf_dir = dirs
    res = CliRunner().invoke(cli, ["cni", "install", "--bin-dir", bin_dir,
                                   "--conf-dir", conf_dir, *args])
    assert res.exit_code == 1 and word in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert os.listdir(bin_dir) == ["portmap"] and not os.path.exists(conf_dir)


def test_missing_bin_dir_or_portmap(tmp_path, dirs):
    _, conf_dir = dirs
    with pytest.raises(installer.InstallError, match="does not exist"):
        installer.install([str(tmp_path / "nope")], conf_dir, "overnet", "1.0.0")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(installer.InstallError, match="portmap not found"):
        installer.install([str(empty)], conf_dir, "overnet", "1.0.0")
    assert os.listdir(empty) == []


def test_unwritable_conf_dir_leaves_no_executables(tmp_path, dirs):
    bin_dir, _ = dirs
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(installer.InstallError, match="cannot create"):
        installer.install([bin_dir], str(blocker / "net.d"), "overnet", "1.0.0")
    assert os.listdir(bin_dir) == ["portmap"]


def test_debian_portmap_version_is_read():
    """Debian 12's reference plugins (scripts/setup.sh installs them) stop at 1.0.0."""
    assert installer._highest_version(PORTMAP) == "1.0.0"


def test_a_foreign_flannel_is_not_overwritten(dirs):
    bin_dir, conf_dir = dirs
    theirs = os.path.join(bin_dir, "flannel")
    with open(theirs, "wb") as f:
        f.write(b"\x7fELF flannel's own plugin")
    with pytest.raises(installer.InstallError, match="is not overnet's"):
        installer.install([bin_dir], conf_dir, "overnet", "1.0.0")
    with open(theirs, "rb") as f:
        assert f.read().startswith(b"\x7fELF")
    assert sorted(os.listdir(bin_dir)) == ["flannel", "portmap"]
