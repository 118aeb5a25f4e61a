"""The agent's POST /cni route (api/cniroute.py): the call's framing as the compiled shim
sends it, and bad calls answered with the spec's error JSON naming the bad value, before
anything reaches the agent's services (no route behind them here)."""

from __future__ import annotations

import json

import pytest

from overnet.api import http as web
from overnet.api.cniroute import LocalApi, decode_call, encode_answer, encode_call, handle
from overnet.cni.spec import CniError

CONF = b'{"cniVersion": "1.0.0", "name": "foobar", "type": "overnet-cni"}'


def frame(env: dict[str, str], conf: bytes = CONF) -> bytes:
    return encode_call(env, conf)


def test_decode_call_splits_variables_from_the_config():
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc", "CNI_ARGS": "A=b=c;X=",
           "CNI_NETNS": "/run/netns/caf\u00e9", "CNI_IFNAME": "", "CNI_PATH": "/a:/b"}
    assert frame(env).startswith(b"CNI_COMMAND=ADD\0CNI_CONTAINERID=abc\0CNI_ARGS=A=b=c;X=\0")
    assert decode_call(frame(env)) == (env, CONF)
    assert decode_call(b"\0" + CONF) == ({}, CONF)
    assert decode_call(frame({"CNI_COMMAND": "DEL"}, b"")) == ({"CNI_COMMAND": "DEL"}, b"")


def test_decode_call_keeps_bytes_that_are_not_utf8_as_os_environ_does():
    env, _ = decode_call(b"CNI_NETNS=/run/netns/\xff\0\0{}")
    assert env["CNI_NETNS"] == "/run/netns/\udcff"


@pytest.mark.parametrize("body,word", [
    (b"CNI_COMMAND=ADD", "do not end"),
    (b"CNI_COMMAND=ADD\0" + CONF, "do not end"),
    (b"HOME=/root\0\0" + CONF, "'HOME=/root'"),
    (b"CNI_COMMAND\0\0" + CONF, "'CNI_COMMAND'"),
    (b"", "do not end"),
])
def test_a_malformed_call_names_what_is_wrong(body, word):
    with pytest.raises(CniError) as err:
        decode_call(body)
    assert err.value.code == 4 and word in err.value.msg


def test_encode_answer():
    assert encode_answer(0, "{}\n") == b"0\n{}\n"
    assert encode_answer(1, "") == b"1\n"


def on_error(request: web.Request, e: Exception) -> web.Response:
    return web.Response.json({"message": str(e)}, 500)


async def answer(env: dict[str, str], conf: bytes = CONF) -> tuple[int, dict]:
    status, text = await handle(LocalApi(web.RouteTableDef(), on_error), frame(env, conf))
    return status, json.loads(text)


ADD = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x",
       "CNI_IFNAME": "eth0"}


@pytest.mark.parametrize("env,conf,code,word", [
    (dict(ADD, CNI_IFNAME="eth\r\n0"), CONF, 4, "'eth\\r\\n0'"),
    (dict(ADD, CNI_CONTAINERID="c1\r\nX-Evil: 1"), CONF, 4, "'c1\\r\\nX-Evil: 1'"),
    ({k: v for k, v in ADD.items() if k != "CNI_COMMAND"}, CONF, 4, "[CNI_COMMAND]"),
    (dict(ADD, CNI_COMMAND="EXPLODE"), CONF, 4, "'EXPLODE'"),
    (ADD, b'{"cniVersion": "1.0.0", "name": ', 6, "decoding"),
    (ADD, b'{"cniVersion": "0.2.0", "name": "n"}', 1, "incompatible"),
    (ADD, CONF.replace(b'"overnet-cni"', b'"overnet-cni", "agentSocket": "run/x.sock"'), 7,
     "'run/x.sock'"),
    (dict(ADD, CNI_ARGS="BOGUS=1"), CONF, 4, "'BOGUS'"),
])
async def test_bad_calls_get_the_error_json_naming_the_value(env, conf, code, word):
    status, err = await answer(env, conf)
    assert status == 1 and err["code"] == code and word in err["msg"], err
    assert set(err) == {"cniVersion", "code", "msg", "details"}


async def test_errors_are_in_the_config_s_cni_version():
    conf = CONF.replace(b"1.0.0", b"0.4.0")
    status, err = await answer(dict(ADD, CNI_IFNAME="a/b"), conf)
    assert status == 1 and err["cniVersion"] == "1.1.0"     # env checked before the config
    status, err = await answer(ADD, conf.replace(b'"name"', b'"network": 5, "name"'))
    assert (status, err["code"], err["cniVersion"]) == (1, 7, "0.4.0")


async def test_version_is_answered_too():
    status, out = await answer({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.4.0"}')
    assert status == 0 and out["cniVersion"] == "0.4.0" and "1.1.0" in out["supportedVersions"]


async def test_an_agent_without_the_network_route_is_an_error_not_a_crash():
    """ADD reaches POST /endpoints in-process; with no such route (404) it is the plugin's
    unknown-network error, as over the socket."""
    status, err = await answer(ADD)
    assert status == 1 and err["code"] == 7 and "attaching container c1" in err["msg"]
