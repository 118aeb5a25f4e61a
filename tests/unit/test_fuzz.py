"""Property-based fuzzing of everything that reads input from outside: request bodies, store
values, endpoint admission and the HTTP server itself."""

from __future__ import annotations

import atexit
import dataclasses
import ipaddress
import json
import logging
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from overnet.api import http, schema
from overnet.errors import Invalid
from overnet.store import keys
from overnet.store.records import (BlockRecord, EndpointRecord, HostRecord, NameClaim,
                                   NetworkRecord, PoolClaim, ServiceRecord, VniClaim, decode)
from overnet.store.validate import admit_endpoints, admit_hosts
from tests.unit.http_helper import exchange, serving

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# Hypothesis caches what it learns under ./.hypothesis, from test collection on: a test leaves
# nothing on the machine, so the cache lives in a temp dir removed when pytest exits.
_HOME = tempfile.mkdtemp(prefix="overnet-hypothesis-")
atexit.register(shutil.rmtree, _HOME, True)
set_hypothesis_home_dir(_HOME)


# --- arbitrary JSON ------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers() | st.integers(-2**70, 2**70)
           | st.floats() | st.text(max_size=30)
           | st.sampled_from(["", "eth0", "web", "/web", "10.0.0.2", "02:42:0a:00:00:02",
                              "A=1", "cni", "0.0.0.0/0", "10.1.0.0/16", "no", "x" * 100]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=5),
                           max_leaves=20)
SPECS = [schema.CONTAINER_CREATE, schema.NETWORK_CREATE, schema.ENDPOINT_ATTACH,
         schema.ENDPOINT_GC, schema.STARTED, schema.EXITED]


def bodies_for(spec) -> st.SearchStrategy:
    """Objects using the spec's own field names (mostly), so values reach the field checks."""
    names = st.sampled_from(sorted(spec)) | st.text(max_size=8)
    return st.dictionaries(names, json_values, max_size=len(spec) + 1)


@FUZZ
@given(st.data())
def test_schema_parse_raises_only_invalid(data):
    spec = data.draw(st.sampled_from(SPECS))
    body = data.draw(bodies_for(spec) | json_values)
    try:
        got = schema.parse(body, spec, "fuzz")
    except Invalid as e:
        assert e.message and len(e.message) < 2000
        return
    assert set(got) == set(spec)
    for name, field in spec.items():
        if got[name] is not None and field.type in (bool, int, str):
            assert type(got[name]) is field.type


@FUZZ
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_schema_parse_body_raises_only_invalid(raw):
    for spec in SPECS:
        try:
            schema.parse_body(raw, spec, "fuzz")
        except Invalid:
            pass


@FUZZ
@given(st.text(max_size=20))
def test_query_parsers_raise_only_invalid(raw):
    for parse in (lambda q: schema.query_float(q, "t", 10.0), lambda q: schema.query_bool(q, "t")):
        try:
            parse({"t": raw})
        except Invalid:
            pass


# --- store values ----------------------------------------------------------------------------

RECORDS = [NetworkRecord, NameClaim, VniClaim, PoolClaim, HostRecord, BlockRecord,
           EndpointRecord, ServiceRecord]


def record_like(cls) -> st.SearchStrategy:
    names = st.sampled_from([f.name for f in dataclasses.fields(cls)]) | st.text(max_size=5)
    return st.dictionaries(names, json_values, max_size=12).map(lambda d: json.dumps(d).encode())


@FUZZ
@given(st.data())
def test_decode_never_raises(data):
    cls = data.draw(st.sampled_from(RECORDS))
    raw = data.draw(st.binary(max_size=300) | record_like(cls)
                    | json_values.map(lambda v: json.dumps(v).encode()))
    logging.disable(logging.WARNING)
    try:
        rec = decode(cls, "/fuzz", raw)
    finally:
        logging.disable(logging.NOTSET)
    if rec is not None:
        assert isinstance(rec, cls) and cls.from_json(rec.to_json()) == rec


@FUZZ
@given(st.text(max_size=30))
def test_key_parsers_never_raise(segment):
    logging.disable(logging.WARNING)
    try:
        vni = keys.parse_vni_key(segment)
        net = keys.try_parse_cidr_key(segment)
    finally:
        logging.disable(logging.NOTSET)
    assert vni is None or 1 <= vni < 1 << 24
    assert net is None or keys.cidr_key(net) == segment


# --- endpoint admission ----------------------------------------------------------------------

NET = NetworkRecord(id="ab" * 32, name="n", driver="overlay", subnet="10.0.0.0/28",
                    gateway="10.0.0.1", vni=256)
HOSTS = {"h1": HostRecord(name="h1", address="192.168.1.1"),
         "h2": HostRecord(name="h2", address="192.168.1.2")}

VTEPS = ["own"] * 6 + ["192.168.1.1", "192.168.1.2", "0.0.0.0", "127.0.0.1", "10.9.9.9"]


def _endpoint(n: int, net: str, host: str, vtep: str, ip: int, mac: int) -> EndpointRecord:
    # Mostly well-formed (the host's own VTEP, an address of the subnet) so that conflicts
    # between otherwise good records are common, and every other kind of fault turns up too.
    own = HOSTS[host].address if host in HOSTS else "192.168.1.3"
    return EndpointRecord(id=f"{n:064x}", network=net, container=f"c{n}", name=f"e{n}",
                          host=host, host_address=own if vtep == "own" else vtep,
                          ip=str(ipaddress.IPv4Address("10.0.0.0") + ip),
                          mac=f"02:42:00:00:00:{mac:02x}")


endpoints = st.builds(_endpoint, st.integers(0, 10**6),
                      st.sampled_from([NET.id] * 5 + ["cd" * 32]),
                      st.sampled_from(["h1", "h2", "h1", "h2", "h3"]), st.sampled_from(VTEPS),
                      st.integers(0, 20), st.integers(0, 8))
candidates = st.lists(st.tuples(st.integers(0, 10**6).map(lambda i: f"/k/{i}"),
                                st.integers(1, 30), endpoints), max_size=30)


@FUZZ
@given(candidates, st.randoms())
def test_admission_never_admits_a_conflict(cands, rng):
    logging.disable(logging.WARNING)
    try:
        admitted, rejected = admit_endpoints(NET, cands, HOSTS)
        shuffled = list(cands)
        rng.shuffle(shuffled)
        again = admit_endpoints(NET, shuffled, HOSTS)
    finally:
        logging.disable(logging.NOTSET)
    subnet = ipaddress.IPv4Network(NET.subnet)
    assert len({ep.ip for ep in admitted}) == len(admitted)
    assert len({ep.mac for ep in admitted}) == len(admitted)
    for ep in admitted:
        ip = ipaddress.IPv4Address(ep.ip)
        assert ip in subnet and ip not in (subnet.network_address, subnet.broadcast_address,
                                           ipaddress.IPv4Address(NET.gateway))
        assert ep.network == NET.id and HOSTS[ep.host].address == ep.host_address
    assert len(admitted) + len(rejected) == len(cands)
    if len({key for key, _, _ in cands}) == len(cands):   # keys are unique in a real store
        assert again == (admitted, rejected)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["/h/a", "/h/b", "/h/c"]), st.integers(1, 9),
                          st.builds(HostRecord, name=st.sampled_from(["a", "b", "c"]),
                                    address=st.sampled_from(["10.1.1.1", "10.1.1.2"]))),
                max_size=8))
def test_host_admission_keeps_addresses_unique(cands):
    logging.disable(logging.WARNING)
    try:
        admitted, _ = admit_hosts(cands)
    finally:
        logging.disable(logging.NOTSET)
    assert len({h.address for h in admitted.values()}) == len(admitted)


# --- the HTTP server -------------------------------------------------------------------------

THING = {"name": schema.Field(str, required=True, check=schema.name_of("thing")),
         "tags": schema.Field(list[str], default=[])}


def fuzz_routes() -> http.RouteTableDef:
    """Routes as the agent writes them: bodies through schema, so bad input is a 400."""
    routes = http.RouteTableDef()

    @routes.get("/things/{name}")
    async def get(request):
        return http.Response.json({"name": request.match_info["name"],
                                   "t": schema.query_float(request.query, "t", 1.0)})

    @routes.post("/things")
    async def post(request):
        return http.Response.json(schema.parse_body(request.body, THING, "thing"), 201)

    return routes


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fuzz") / "api.sock")
    errors = _Errors()
    logging.getLogger("overnet.api.http").addHandler(errors)
    try:
        with serving(path, fuzz_routes()):
            yield path, errors
    finally:
        logging.getLogger("overnet.api.http").removeHandler(errors)


STARTS = [b"", b"GET /things/a HTTP/1.1\r\n", b"POST /things HTTP/1.1\r\n",
          b"GET /things/a?t=", b"POST /things HTTP/1.0\r\nContent-Length: ",
          b"DELETE /x HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"]
HEADERS = st.lists(st.sampled_from([b"Content-Length: 2", b"Content-Length: -1",
                                    b"Content-Length: x", b"Connection: close",
                                    b"Transfer-Encoding: chunked", b"Expect: 100-continue",
                                    b"Bad header", b"X: \xff\xfe"]), max_size=4)
requests = st.builds(lambda start, headers, gap, body: start + b"".join(
    h + b"\r\n" for h in headers) + gap + body, st.sampled_from(STARTS), HEADERS,
    st.sampled_from([b"", b"\r\n", b"\n"]), st.binary(max_size=64)
    | json_values.map(lambda v: json.dumps(v).encode()))
GOOD = b"GET /things/ok HTTP/1.1\r\nConnection: close\r\n\r\n"


def statuses(raw: bytes) -> list[int]:
    """Every status line in a (possibly pipelined) answer."""
    return [int(line.split(b" ")[1]) for line in raw.split(b"\r\n")
            if line.startswith(b"HTTP/1.1 ")]


@settings(FUZZ, max_examples=200)
@given(st.binary(max_size=300) | requests)
def test_http_server_answers_4xx_or_closes_and_keeps_serving(api, data):
    path, errors = api
    status, headers, body = exchange(path, data)
    if status is not None:
        seen = statuses(b"HTTP/1.1 %d x\r\n" % status + body)
        assert all(s < 500 for s in seen), (data, seen)
        if status >= 400:
            assert json.loads(body[:int(headers["content-length"])])["message"]
    assert exchange(path, GOOD)[0] == 200
    assert errors.records == []


# --- the CLI's arguments -------------------------------------------------------------------

CLI_WORDS = ["run", "-d", "--rm", "--name", "--net", "--publish-service", "--link", "-e",
             "network", "create", "rm", "ls", "inspect", "-f", "ps", "-a", "exec", "stop",
             "logs", "service", "subnet", "config", "--subnet", "--gateway", "-t", "x",
             "0.0.0.0/0", "10.0.0.0/33", "a.b.c", "/x", "-", "--", "{{ .Id }}", "é", ""]


@FUZZ
@given(st.lists(st.sampled_from(CLI_WORDS) | st.text(max_size=12), max_size=6))
def test_cli_arguments_never_give_a_traceback(tmp_path_factory, args):
    """Whatever the arguments, with no agent listening: exit 0, 1 or 2 and no traceback
    (click's own usage errors are 2; ours are one line and 1)."""
    from click.testing import CliRunner

    from overnet.cli.main import cli
    sock = str(tmp_path_factory.getbasetemp() / "nobody.sock")
    result = CliRunner().invoke(cli, ["-H", f"unix://{sock}", *args], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"overnet {args!r} raised {result.exception!r}")
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.output)
    assert "Traceback" not in result.output
