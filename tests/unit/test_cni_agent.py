"""overnet-cni against a fake agent on a temporary unix socket: the requests it sends, the
answers it shapes, its errors, pending DELs and their flush."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from overnet.cni import pending
from overnet.cni.agent import connect
from overnet.cni.main import run
from overnet.cni.spec import VERSIONS, CniError
from tests.unit.cni_fake_agent import FakeAgent

CID = "c0ffee1234567890abcdef"


@pytest.fixture
def agent():
    fake = FakeAgent(networks=("foobar", "other"))
    yield fake
    fake.close()


@pytest.fixture
def pend(tmp_path) -> str:
    return str(tmp_path / "pending")


def conf_for(agent: FakeAgent, pend: str, version: str = "1.0.0", **extra) -> dict:
    return dict({"cniVersion": version, "name": "foobar", "type": "overnet-cni",
                 "agentSocket": agent.socket, "pendingDir": pend}, **extra)


def call(verb: str, conf: dict, cid: str = CID, ifname: str = "eth0", args: str = ""):
    env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": f"/run/netns/{cid[:6]}",
           "CNI_IFNAME": ifname, "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": args}
    return run(env, json.dumps(conf).encode(), [conf.get("cniVersion", "1.1.0")])


def error_of(verb: str, conf: dict, **kw) -> CniError:
    with pytest.raises(CniError) as err:
        call(verb, conf, **kw)
    return err.value


@pytest.mark.parametrize("version", VERSIONS)
def test_add_check_del_per_version(agent, pend, version):
    conf = conf_for(agent, pend, version)
    res = call("ADD", conf)
    assert res["cniVersion"] == version
    assert res["ips"][0]["address"] == "10.0.0.2/24"
    assert ("version" in res["ips"][0]) == (version < "1.0.0")
    method, path, body = agent.requests[-1]
    assert (method, path) == ("POST", "/endpoints")
    assert body == {"network": "foobar", "container_id": CID, "netns": "/run/netns/c0ffee",
                    "ifname": "eth0", "runtime": "cni", "name": CID[:12]}
    if version >= "0.4.0":
        assert call("CHECK", dict(conf, prevResult=res)) is None
    assert call("DEL", dict(conf, prevResult=res)) is None
    assert agent.endpoints == {}
    assert call("DEL", conf) is None  # twice: still fine


def test_add_names_and_addresses_from_the_runtime(agent, pend):
    conf = conf_for(agent, pend, network="other", runtimeConfig={
        "ips": ["10.0.0.9/24"], "mac": "02:00:00:00:00:09",
        "aliases": {"foobar": ["Db_1", "cache"]}})
    call("ADD", conf, args="IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=My_App")
    body = agent.requests[-1][2]
    assert (body["network"], body["name"], body["ip"], body["mac"], body["aliases"]) == (
        "other", "my-app", "10.0.0.9", "02:00:00:00:00:09", ["db-1", "cache"])
    call("ADD", conf_for(agent, pend), cid="b" * 20, args="IP=10.0.0.7;MAC=02:00:00:00:00:07")
    body = agent.requests[-1][2]
    assert (body["ip"], body["mac"], body["name"]) == ("10.0.0.7", "02:00:00:00:00:07", "b" * 12)
    call("ADD", conf_for(agent, pend), cid="Pod.Sandbox_1234")   # the ID as a DNS label
    assert agent.requests[-1][2]["name"] == "pod-sandbox"


def test_add_twice_is_an_error_and_no_second_address(agent, pend):
    conf = conf_for(agent, pend)
    call("ADD", conf)
    err = error_of("ADD", conf)
    assert err.code == 999 and "already attached" in err.msg
    assert len(agent.endpoints) == 1
    assert call("ADD", conf, ifname="eth1")["ips"][0]["address"] == "10.0.0.3/24"


def test_add_errors(agent, pend):
    assert error_of("ADD", conf_for(agent, pend, network="nope")).code == 7
    agent.fail_with = 503
    assert error_of("ADD", conf_for(agent, pend)).code == 11
    agent.fail_with = 400
    assert error_of("ADD", conf_for(agent, pend)).code == 7
    agent.fail_with = 500
    assert error_of("ADD", conf_for(agent, pend)).code == 999
    gone = conf_for(agent, pend, agentSocket=agent.socket + ".gone")
    err = error_of("ADD", gone)
    assert err.code == 11 and "not available" in err.msg and ".gone" in err.details


def test_prev_result_passes_through_add(agent, pend):
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "lo", "sandbox": "/x"}],
            "ips": [], "routes": []}
    res = call("ADD", conf_for(agent, pend, prevResult=prev))
    assert [i["name"] for i in res["interfaces"]] == ["lo", f"veth{CID[:7]}", "eth0"]
    assert res["ips"][0]["interface"] == 2


def test_check(agent, pend):
    conf = conf_for(agent, pend, "1.1.0")
    assert error_of("CHECK", conf).code == 3
    res = call("ADD", conf)
    agent.check_problems = ["mtu 1500 in the kernel, 1450 in the store"]
    err = error_of("CHECK", dict(conf, prevResult=res))
    assert "mtu 1500" in err.msg and err.code == 999
    agent.check_problems = []
    res["ips"][0]["address"] = "10.0.0.99/24"
    assert "10.0.0.99" in error_of("CHECK", dict(conf, prevResult=res)).msg
    agent.fail_with = 503
    assert error_of("CHECK", conf).code == 11


def test_del_while_agent_away_is_finished_later(agent, pend):
    conf = conf_for(agent, pend)
    call("ADD", conf)
    away = conf_for(agent, pend, agentSocket=agent.socket + ".gone")
    assert call("DEL", away) is None                       # succeeds for the runtime
    assert [r["container_id"] for _, r in pending.entries(pend)] == [CID]
    assert (CID, "eth0") in agent.endpoints               # not yet released
    agent.fail_with = 503
    assert call("DEL", conf, cid="d" * 12) is None        # store down: kept as well
    assert len(pending.entries(pend)) == 2
    agent.fail_with = None
    before = len(agent.requests)
    call("ADD", conf, cid="e" * 12)                       # the next call flushes first
    seen = [(m, p) for m, p, _ in agent.requests[before:]]
    assert seen[:2] == [("DELETE", f"/endpoints/{CID}/eth0"),
                        ("DELETE", f"/endpoints/{'d' * 12}/eth0")]
    assert seen[2] == ("POST", "/endpoints")
    assert pending.entries(pend) == [] and (CID, "eth0") not in agent.endpoints


def test_flush_pending_for_the_agent(agent, pend):
    for cid in ("a1", "a2"):
        pending.remember(pend, cid, "eth0", "foobar")
    away = connect(agent.socket + ".gone")
    assert pending.flush_pending(away, pend) == 0 and len(pending.entries(pend)) == 2
    agent.fail_with = 500
    assert pending.flush_pending(connect(agent.socket), pend) == 0
    agent.fail_with = None
    assert pending.flush_pending(connect(agent.socket), pend) == 2
    assert pending.entries(pend) == [] and os.path.isdir(pend)
    for status in (404, 400):   # gone already, or refused: a retry cannot help, so dropped
        pending.remember(pend, "a3", "eth0", "foobar")
        agent.fail_with = status
        assert pending.flush_pending(connect(agent.socket), pend) == 1
        assert pending.entries(pend) == []


def test_del_that_cannot_be_kept_is_try_again_later(agent, pend, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    conf = conf_for(agent, str(blocker / "pending"), agentSocket=agent.socket + ".gone")
    assert error_of("DEL", conf).code == 11
    agent.fail_with = 500
    assert error_of("DEL", conf_for(agent, pend)).code == 999


def test_gc_keeps_listed_and_other_networks(agent, pend):
    conf = conf_for(agent, pend, "1.1.0")
    for cid in ("keep1", "stale1", "stale2"):
        call("ADD", conf, cid=cid)
    call("ADD", conf_for(agent, pend, "1.1.0", network="other"), cid="othernet")
    gc = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "keep1", "ifname": "eth0"}]})
    env = {"CNI_COMMAND": "GC", "CNI_PATH": "/usr/lib/cni"}
    assert run(env, json.dumps(gc).encode(), ["1.1.0"]) is None
    assert sorted(agent.endpoints) == [("keep1", "eth0"), ("othernet", "eth0")]
    assert agent.requests[-1][:2] == ("POST", "/endpoints/gc")
    assert agent.requests[-2][:2] == ("GET", "/endpoints")


def test_status(agent, pend):
    env = {"CNI_COMMAND": "STATUS", "CNI_PATH": "/usr/lib/cni"}
    conf = conf_for(agent, pend, "1.1.0")
    assert run(env, json.dumps(conf).encode(), ["1.1.0"]) is None
    for bad in (dict(conf, network="nope"), dict(conf, agentSocket=agent.socket + ".gone")):
        with pytest.raises(CniError) as err:
            run(env, json.dumps(bad).encode(), ["1.1.0"])
        assert err.value.code == 50


def test_the_executable_prints_results_and_errors(agent, pend):
    """The console entry point: result or error JSON on stdout, exit 0 or 1."""
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": CID, "CNI_NETNS": "/run/netns/x",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "overnet.cni.main"]
    ok = subprocess.run(cmd, input=json.dumps(conf_for(agent, pend, "0.4.0")).encode(),
                        env=env, capture_output=True, timeout=30, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["ips"][0]["version"] == "4"
    again = subprocess.run(cmd, input=json.dumps(conf_for(agent, pend, "0.4.0")).encode(),
                           env=env, capture_output=True, timeout=30, check=False)
    err = json.loads(again.stdout)
    assert again.returncode == 1 and err["code"] == 999 and err["cniVersion"] == "0.4.0"
    assert set(err) == {"cniVersion", "code", "msg", "details"}


def test_an_unexpected_answer_is_an_error_result_not_a_traceback(agent, pend):
    agent.endpoint = lambda body: {"host_ifname": "veth0"}     # no address in it
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": CID, "CNI_NETNS": "/run/netns/x",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
    proc = subprocess.run([sys.executable, "-m", "overnet.cni.main"],
                          input=json.dumps(conf_for(agent, pend)).encode(), env=env,
                          capture_output=True, timeout=30, check=False)
    assert proc.returncode == 1 and json.loads(proc.stdout)["code"] == 999


def test_cli_flush(agent):
    from click.testing import CliRunner

    from overnet.cli.main import cli
    kept = os.path.join(agent.dir, "cni-pending")      # beside the socket: the default
    for cid in ("f1", "f2"):
        pending.remember(kept, cid, "eth0", "foobar")
    res = CliRunner().invoke(cli, ["-H", f"unix://{agent.socket}", "cni", "flush"])
    assert res.exit_code == 0 and "2 pending DEL(s) finished, 0 left" in res.output
    pending.remember(kept, "f3", "eth0", "foobar")
    away = CliRunner().invoke(cli, ["-H", f"unix://{agent.socket}.gone", "cni", "flush",
                                    "--pending-dir", kept])
    assert away.exit_code == 1 and "1 DEL(s) still pending" in away.output
