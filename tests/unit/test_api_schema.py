"""Typed request parsing for the agent's API (api/schema.py)."""

import pytest

from overnet.api import schema
from overnet.api.schema import Field, Objects, parse, parse_body, query_bool, query_float
from overnet.errors import Invalid

ATTACH = {"network": "foobar", "container_id": "c" * 64, "netns": "/run/netns/x",
          "runtime": "cni"}


def refused(body, spec, message):
    with pytest.raises(Invalid) as e:
        parse(body, spec, "test")
    assert str(e.value) == message
    assert e.value.status == 400


def test_defaults_fill_every_field_and_null_is_absent():
    got = parse({"name": None, "cmd": ["sleep", "1"]}, schema.CONTAINER_CREATE, "x")
    assert got == {"name": "", "net": "", "publish_service": "", "env": {},
                   "cmd": ["sleep", "1"], "detach": False, "rm": False, "tty": False,
                   "interactive": False, "links": [], "privileged": False}


def test_defaults_are_copied_per_request():
    first = parse({}, schema.CONTAINER_CREATE, "x")
    first["cmd"].append("mutated")
    assert parse({}, schema.CONTAINER_CREATE, "x")["cmd"] == ["/bin/sh"]


@pytest.mark.parametrize("body, message", [
    ({"detach": "no"}, 'invalid field "detach": expected true or false, got "no"'),
    ({"detach": 1}, 'invalid field "detach": expected true or false, got 1'),
    ({"name": 123}, 'invalid field "name": expected a string, got 123'),
    ({"net": 5}, 'invalid field "net": expected a string, got 5'),
    ({"publish_service": 7}, 'invalid field "publish_service": expected a string, got 7'),
    ({"publish_service": "a.b.c.d"},
     'invalid field "publish_service": expected SERVICE[.NETWORK[.DRIVER]], got "a.b.c.d"'),
    ({"env": "A=1"},
     'invalid field "env": expected an object of strings or a list of "KEY=VALUE", got "A=1"'),
    ({"env": {"A": 1}},
     'invalid field "env": expected an object of strings or a list of "KEY=VALUE", '
     'got {"A": 1}'),
    ({"env": ["A"]},
     'invalid field "env": expected an object of strings or a list of "KEY=VALUE", got ["A"]'),
    ({"env": {"": "x"}},
     'invalid field "env": expected variable names that are not empty and hold no \'=\', '
     'got {"": "x"}'),
    ({"cmd": "sh"}, 'invalid field "cmd": expected a list of strings, got "sh"'),
    ({"cmd": []}, 'invalid field "cmd": expected a command (a list of at least one string), '
     "got []"),
    ({"cmd": ["a\0b"]}, 'invalid field "cmd": expected a list of strings, got ["a\\u0000b"]'),
    ({"links": ["web:a.b"]},
     'invalid field "links": expected NAME[:ALIAS] links, "web:a.b" is not one, '
     'got ["web:a.b"]'),
    ({"name": "/web"}, "invalid container name '/web': use 1-63 letters, digits, '_' or '-', "
     "starting with a letter or digit"),
    ({"nmae": "web"}, 'test: unknown field "nmae" (known: name, net, publish_service, env, cmd, '
     "detach, rm, tty, interactive, links, privileged)"),
])
def test_container_create_refusals(body, message):
    refused(body, schema.CONTAINER_CREATE, message)


def test_env_as_docker_list():
    got = parse({"env": ["A=1", "B=x=y", "C="]}, schema.CONTAINER_CREATE, "x")["env"]
    assert got == {"A": "1", "B": "x=y", "C": ""}


def test_long_values_are_cut():
    with pytest.raises(Invalid) as e:
        parse({"name": "x" * 1_000_000}, schema.CONTAINER_CREATE, "x")
    assert len(str(e.value)) < 300


def test_network_create():
    assert parse({"name": "foobar", "subnet": "10.1.0.0/16", "gateway": None},
                 schema.NETWORK_CREATE, "x") == {"name": "foobar", "driver": "overlay",
                                                 "subnet": "10.1.0.0/16", "gateway": None}
    refused({}, schema.NETWORK_CREATE, 'test: missing field "name"')
    refused({"name": "foobar", "subnet": "0.0.0.0/0"}, schema.NETWORK_CREATE,
            "invalid subnet '0.0.0.0/0': /0 is too large, the largest pool is a /8")
    refused({"name": "foobar", "gateway": "10.0.0.x"}, schema.NETWORK_CREATE,
            'invalid field "gateway": expected an IPv4 address, got "10.0.0.x"')


def test_endpoint_attach():
    got = parse({**ATTACH, "mac": "02:42:0A:00:00:07", "aliases": ["db"]},
                schema.ENDPOINT_ATTACH, "x")
    assert got["mac"] == "02:42:0a:00:00:07" and got["ifname"] == "eth0" and got["ip"] is None
    for field, value, reason in [
            ("ip", "127.0.0.1", "expected a unicast IPv4 host address"),
            ("mac", "01:00:5e:00:00:01", "expected a unicast MAC address"),
            ("ifname", "x" * 16, "expected an interface name"),
            ("netns", "relative/path", "expected an absolute path"),
            ("netns", "/run/../etc", "expected an absolute path"),
            ("container_id", "a/b", "expected 1-256 letters"),
            ("runtime", "rkt", "expected one of overnet, cni"),
            ("aliases", [f"a{i}" for i in range(17)], "at most 16 aliases")]:
        with pytest.raises(Invalid, match=f'invalid field "{field}": {reason}'):
            parse({**ATTACH, field: value}, schema.ENDPOINT_ATTACH, "x")
    with pytest.raises(Invalid, match="invalid alias name 'a.b'"):
        parse({**ATTACH, "aliases": ["a.b"]}, schema.ENDPOINT_ATTACH, "x")
    refused({**ATTACH, "runtime": None}, schema.ENDPOINT_ATTACH, 'test: missing field "runtime"')


def test_endpoint_gc_names_the_nested_field():
    ok = parse({"runtime": "cni", "keep": [{"container_id": "c1", "ifname": "eth0"}]},
               schema.ENDPOINT_GC, "x")
    assert ok["keep"] == [{"container_id": "c1", "ifname": "eth0"}]
    refused({"runtime": "cni", "keep": [{"container_id": "c1", "ifname": 5}]},
            schema.ENDPOINT_GC, 'invalid field "keep[0].ifname": expected a string, got 5')
    refused({"runtime": "cni", "keep": [{"container_id": "c1"}]}, schema.ENDPOINT_GC,
            'test: missing field "keep[0].ifname"')
    refused({"runtime": "cni", "keep": [3]}, schema.ENDPOINT_GC,
            'invalid field "keep[0]": expected an object, got 3')


def test_started_and_exited():
    assert parse({"pid": 42}, schema.STARTED, "x") == {"pid": 42}
    refused({"pid": 0}, schema.STARTED, 'invalid field "pid": expected a number from 1 to '
            '4194304, got 0')
    refused({"pid": True}, schema.STARTED, 'invalid field "pid": expected an integer, got true')
    refused({"pid": 1.5}, schema.STARTED, 'invalid field "pid": expected an integer, got 1.5')
    assert parse({"code": -9}, schema.EXITED, "x") == {"code": -9}
    refused({"code": 10 ** 30}, schema.EXITED, 'invalid field "code": expected a number from '
            f'{-(1 << 31)} to {(1 << 31) - 1}, got {10 ** 30}')


def test_parse_body():
    assert parse_body(b" ", {"a": Field(int, default=1)}, "x") == {"a": 1}
    for raw, message in [(b"{", "x: the request body is not JSON"),
                         (b"[" * 100_000, "x: the request body is not JSON"),
                         (b"\xff", "x: the request body is not JSON"),
                         (b"[]", "x: the request body must be a JSON object, got []")]:
        with pytest.raises(Invalid) as e:
            parse_body(raw, schema.STARTED, "x")
        assert str(e.value) == message


def _below_5(value: float) -> None:
    if value >= 5:
        raise ValueError("expected less than 5")


def test_custom_fields():
    spec = {"n": Field(float, check=_below_5), "objs": Field(Objects({"k": Field(str)}, most=2))}
    assert parse({"n": 3}, spec, "x") == {"n": 3.0, "objs": None}
    refused({"n": 7}, spec, 'invalid field "n": expected less than 5, got 7')
    refused({"n": float("nan")}, spec, 'invalid field "n": expected a number, got NaN')
    refused({"objs": [{}, {}, {}]}, spec,
            'invalid field "objs": expected a list of at most 2 objects, got [{}, {}, {}]')


@pytest.mark.parametrize("raw, value", [(None, 10.0), ("", 10.0), ("0", 0.0), ("2.5", 2.5),
                                        (".5", 0.5)])
def test_query_float(raw, value):
    assert query_float({} if raw is None else {"t": raw}, "t", 10.0) == value


@pytest.mark.parametrize("raw", ["abc", "-1", "nan", "inf", "1e3", " 5", "1_0", "٣", "1e999",
                                 "99999999999"])
def test_query_float_refusals(raw):
    with pytest.raises(Invalid, match='invalid query parameter "t": expected a number from 0'):
        query_float({"t": raw}, "t", 10.0)


def test_query_bool():
    assert query_bool({"force": "1"}, "force") and query_bool({"force": "true"}, "force")
    assert not query_bool({}, "force") and not query_bool({"force": "0"}, "force")
    with pytest.raises(Invalid, match='"force": expected 1, true, 0 or false, got "yes"'):
        query_bool({"force": "yes"}, "force")
