"""Pure helpers: hosts file, publish-service parsing, names, CLI formatting and arguments."""

import pytest
from click.testing import CliRunner

from overnet.agent import networks as nets
from overnet.cli.format import ago, table
from overnet.cli.main import cli, render_template
from overnet.discovery.hosts import Peer, render
from overnet.errors import Conflict, Invalid, NotFound
from overnet.store.records import NetworkRecord


def test_hosts_file_matches_the_seed_layout():
    text = render("172.21.0.4", "2ac726b4ce60", [
        Peer("172.21.0.3", "distracted_bohr", "multihost"),
        Peer("172.21.0.4", "modest_curie", "multihost")])
    assert text.splitlines() == [
        "172.21.0.4\t2ac726b4ce60",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "ff00::0\tip6-mcastprefix",
        "ff02::1\tip6-allnodes",
        "ff02::2\tip6-allrouters",
        "172.21.0.3\tdistracted_bohr",
        "172.21.0.3\tdistracted_bohr.multihost",
        "172.21.0.4\tmodest_curie",
        "172.21.0.4\tmodest_curie.multihost",
    ]


def test_parse_publish():
    assert nets.parse_publish("bar.foobar.overlay") == ("bar", "foobar", "overlay")
    assert nets.parse_publish("bar.foobar") == ("bar", "foobar", "overlay")
    assert nets.parse_publish("bar") == ("bar", None, "overlay")
    for bad in ("", "a..b", "a.b.c.d", "a.b.bridge", "-x"):
        with pytest.raises(Invalid):
            nets.parse_publish(bad)


def test_network_names():
    nets.validate_network_name("foobar")
    for bad in ("", "-a", "a b", "a.b", "x" * 64):
        with pytest.raises(Invalid) as e:
            nets.validate_network_name(bad)
        assert repr(bad) in e.value.message
    with pytest.raises(Conflict):
        nets.validate_network_name("bridge")


def test_find_network_by_name_id_prefix():
    a = NetworkRecord(id="a1" * 32, name="one", driver="overlay", subnet="10.0.0.0/24",
                      gateway="10.0.0.1")
    b = NetworkRecord(id="a2" * 32, name="two", driver="overlay", subnet="10.0.1.0/24",
                      gateway="10.0.1.1")
    assert nets.find([a, b], "two") is b
    assert nets.find([a, b], "a1a1") is a
    with pytest.raises(Invalid, match="ambiguous"):
        nets.find([a, b], "a")
    with pytest.raises(NotFound, match="'zzz'"):
        nets.find([a, b], "zzz")


def test_table_is_docker_like():
    out = table(["NETWORK ID", "NAME", "DRIVER"], [["4275f8b3a821", "none", "null"]])
    assert out.splitlines() == ["NETWORK ID          NAME                DRIVER",
                                "4275f8b3a821        none                null"]


def test_ago():
    assert ago(0.2) == "Less than a second"
    assert ago(90) == "About a minute"
    assert ago(11 * 60) == "11 minutes"


def test_inspect_template():
    data = {"NetworkSettings": {"SandboxKey": "/run/overnet/netns/6635a3822135"}, "Name": "x"}
    assert render_template("{{ .NetworkSettings.SandboxKey}}", data) == \
        "/run/overnet/netns/6635a3822135"
    assert render_template("{{.Name}}!", data) == "x!"


def test_cli_agent_not_running(tmp_path):
    sock = tmp_path / "none.sock"
    result = CliRunner().invoke(cli, ["-H", f"unix://{sock}", "network", "ls"])
    assert result.exit_code == 1
    assert str(sock) in result.output and "overnet agent --store" in result.output
    assert "Traceback" not in result.output


def test_cli_bad_host_value():
    result = CliRunner().invoke(cli, ["-H", "tcp://1.2.3.4", "ps"])
    assert result.exit_code == 1 and "tcp://1.2.3.4" in result.output


def test_cli_run_keeps_command_options(tmp_path):
    """Options after the command belong to the command, not to `run`."""
    result = CliRunner().invoke(cli, ["-H", f"unix://{tmp_path}/s", "run", "ping", "-c", "1",
                                      "x"])
    assert "no such option" not in result.output
    assert result.exit_code == 1


def test_cli_bad_env():
    result = CliRunner().invoke(cli, ["run", "-e", "NOEQUALS", "true"])
    assert result.exit_code == 1 and "NOEQUALS" in result.output


def test_cli_help_lists_commands():
    result = CliRunner().invoke(cli, ["--help"])
    for cmd in ("agent", "network", "run", "ps", "exec", "inspect", "service"):
        assert cmd in result.output
