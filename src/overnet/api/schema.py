"""Typed request bodies for the agent's API: a declarative spec per route, parsed at the door.

A route calls `parse_body(request.body, SPEC, "what")` (or `parse` on decoded JSON) and gets a
dict holding every field of the spec, of the declared type, or an `Invalid` (HTTP 400) naming the
field and the value: `invalid field "detach": expected true or false, got "no"`. Nothing is
converted: a number is not a string, "no" is not a bool. JSON null counts as absent. Fields
the spec does not know are refused, so a typo is an error and not a silently ignored option.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import Invalid
from ..ipam import pools
from ..runtime.names import check_name, is_valid_name, shown
from ..store.records import IFNAME, MAX_ALIASES, RUNTIMES, SEGMENT, check_mac, unicast


class _Expected(Exception):
    """A value of the wrong type; the message says what was expected."""


def _text(value: Any) -> str:
    """A value as JSON for an error message, cut short when long."""
    try:
        return shown(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError):
        return shown(repr(value))


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise _Expected("a string")
    # NUL ends a C string (paths, argv, environment); a lone surrogate cannot be written out.
    if "\0" in value or not _encodable(value):
        raise _Expected("a string without NUL characters or lone surrogates")
    return value


def _encodable(value: str) -> bool:
    try:
        value.encode()
        return True
    except UnicodeEncodeError:
        return False


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Expected("an integer")
    return value


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise _Expected("a number")
    return float(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Expected("true or false")
    return value


def _str_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise _Expected("a list of strings")
    try:
        return [_str(v) for v in value]
    except _Expected:
        raise _Expected("a list of strings") from None


def _str_dict(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _Expected("an object of strings")
    try:
        return {_str(k): _str(v) for k, v in value.items()}
    except _Expected:
        raise _Expected("an object of strings") from None


def env(value: Any) -> dict[str, str]:
    """An environment: {"K": "V", ...} or ["K=V", ...] (Docker's spelling)."""
    expected = 'an object of strings or a list of "KEY=VALUE"'
    if isinstance(value, list):
        try:
            pairs = [_str(item).partition("=") for item in value]
        except _Expected:
            raise _Expected(expected) from None
        if any(not sep for _, sep, _ in pairs):
            raise _Expected(expected)
        value = {k: v for k, _, v in pairs}
    try:
        out = _str_dict(value)
    except _Expected:
        raise _Expected(expected) from None
    if any(not k or "=" in k for k in out):
        raise _Expected("variable names that are not empty and hold no '='")
    return out


KINDS: dict[Any, Callable[[Any], Any]] = {str: _str, int: _int, float: _float, bool: _bool,
                                          list[str]: _str_list, dict[str, str]: _str_dict}


@dataclass(frozen=True)
class Field:
    """One field: its type (str, int, float, bool, list[str], dict[str, str], a converter such
    as `env`, or `Objects(spec)`), whether it must be given, its default (copied per request),
    and a check: called with the typed value, it raises ValueError (a reason) or Invalid (a
    whole message), and may return a normalised value to use instead."""

    type: Any
    required: bool = False
    default: Any = None
    check: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Objects:
    """A list of objects, each parsed with `spec` (errors name `field[i].inner`)."""

    spec: Mapping[str, Field]
    most: int = 1024


Spec = Mapping[str, Field]


def parse(body: Any, spec: Spec, what: str) -> dict[str, Any]:
    """Decoded JSON -> {field: typed value} for every field of `spec`; raises Invalid."""
    if not isinstance(body, dict):
        raise Invalid(f"{what}: the request body must be a JSON object, got {_text(body)}")
    return _parse(body, spec, what, "")


def parse_body(raw: bytes, spec: Spec, what: str) -> dict[str, Any]:
    """A request body (bytes; empty means {}) -> as `parse`."""
    if not raw.strip():
        return parse({}, spec, what)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):   # RecursionError: "[[[[..." nested very deep
        raise Invalid(f"{what}: the request body is not JSON") from None
    return parse(body, spec, what)


def _parse(body: dict, spec: Spec, what: str, prefix: str) -> dict[str, Any]:
    unknown = [k for k in body if k not in spec]
    if unknown:
        names = ", ".join(f'"{prefix}{shown(k)}"' for k in unknown[:5])
        raise Invalid(f"{what}: unknown field{'s' if len(unknown) > 1 else ''} {names} "
                      f"(known: {', '.join(spec)})")
    out: dict[str, Any] = {}
    for name, field in spec.items():
        value = body.get(name)
        if value is None:
            if field.required:
                raise Invalid(f'{what}: missing field "{prefix}{name}"')
            out[name] = copy.deepcopy(field.default)
        else:
            out[name] = _field(prefix + name, field, value, what)
    return out


def _field(name: str, field: Field, value: Any, what: str) -> Any:
    try:
        if isinstance(field.type, Objects):
            typed = _objects(name, field.type, value, what)
        else:
            typed = KINDS.get(field.type, field.type)(value)
    except _Expected as e:
        raise Invalid(f'invalid field "{name}": expected {e}, got {_text(value)}') from None
    if field.check is None:
        return typed
    try:
        checked = field.check(typed)
    except Invalid:
        raise
    except ValueError as e:
        raise Invalid(f'invalid field "{name}": {e}, got {_text(value)}') from None
    return typed if checked is None else checked


def _objects(name: str, kind: Objects, value: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or len(value) > kind.most:
        raise _Expected(f"a list of at most {kind.most} objects")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise Invalid(f'invalid field "{name}[{i}]": expected an object, got {_text(item)}')
        out.append(_parse(item, kind.spec, what, f"{name}[{i}]."))
    return out


# --- query parameters ---------------------------------------------------------------------

_NUMBER = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", re.ASCII)


def query_float(query: Mapping[str, str], name: str, default: float, minimum: float = 0.0,
                maximum: float = 1e9) -> float:
    """`?name=5` -> 5.0 (plain decimal only: no sign, exponent, nan or inf)."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not _NUMBER.fullmatch(raw) or not minimum <= float(raw) <= maximum:
        raise Invalid(f'invalid query parameter "{name}": expected a number from {minimum:g} '
                      f"to {maximum:g}, got {_text(raw)}")
    return float(raw)


def query_bool(query: Mapping[str, str], name: str) -> bool:
    """`?name=1|true` -> True, `0|false|` or absent -> False, anything else refused."""
    raw = query.get(name, "")
    if raw in ("1", "true"):
        return True
    if raw in ("", "0", "false"):
        return False
    raise Invalid(f'invalid query parameter "{name}": expected 1, true, 0 or false, '
                  f"got {_text(raw)}")


# --- checks shared by the routes' specs ---------------------------------------------------

_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", re.ASCII)   # a name, an ID or its prefix
PID_MAX = 1 << 22   # the kernel's PID_MAX_LIMIT


def name_of(kind: str, empty_ok: bool = False) -> Callable[[str], None]:
    """A check: the value is a valid `kind` name (runtime/names.py's one rule)."""
    def check(value: str) -> None:
        if not (empty_ok and value == ""):
            check_name(kind, value)
    return check


def _ref(value: str) -> None:
    if value and not _REF.fullmatch(value):
        raise ValueError("expected a name, an ID or an ID prefix")


def _publish(value: str) -> None:
    parts = value.split(".")
    if value and (len(parts) > 3 or not all(is_valid_name(p) for p in parts)):
        raise ValueError("expected SERVICE[.NETWORK[.DRIVER]]")


def _links(value: list[str]) -> None:
    for link in value:
        target, _, alias = link.partition(":")
        if not _REF.fullmatch(target) or (alias and not is_valid_name(alias)):
            raise ValueError(f"expected NAME[:ALIAS] links, {_text(link)} is not one")
    if len(value) > 64:
        raise ValueError("at most 64 links")


def _cmd(value: list[str]) -> None:
    if not value:
        raise ValueError("expected a command (a list of at least one string)")


def _subnet(value: str) -> None:
    try:
        pools.parse_subnet(value)
    except pools.IpamError as e:
        raise Invalid(str(e)) from None


def _address(value: str) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError("expected an IPv4 address") from None


def _unicast(value: str) -> None:
    try:
        unicast(value, "address")
    except ValueError:
        raise ValueError("expected a unicast IPv4 host address") from None


def _mac(value: str) -> str:
    try:
        check_mac(value.lower())
    except ValueError:
        raise ValueError("expected a unicast MAC address such as 02:42:0a:00:00:02") from None
    return value.lower()


def _segment(value: str) -> None:
    if not SEGMENT.fullmatch(value):
        raise ValueError("expected 1-256 letters, digits, '_', '.' or '-'")


def _netns(value: str) -> None:
    if not value.startswith("/") or "/../" in value + "/" or len(value) > 4096:
        raise ValueError("expected an absolute path to a network namespace")


def _ifname(value: str) -> None:
    if not IFNAME.fullmatch(value) or value in (".", ".."):
        raise ValueError("expected an interface name of 1-15 letters, digits, '_', '.', '-'")


def _aliases(value: list[str]) -> None:
    if len(value) > MAX_ALIASES:
        raise ValueError(f"at most {MAX_ALIASES} aliases")
    for alias in value:
        check_name("alias", alias)


def _runtime(value: str) -> None:
    if value not in RUNTIMES:
        raise ValueError(f"expected one of {', '.join(RUNTIMES)}")


def _range(low: int, high: int) -> Callable[[int], None]:
    def check(value: int) -> None:
        if not low <= value <= high:
            raise ValueError(f"expected a number from {low} to {high}")
    return check


# --- the routes' specs --------------------------------------------------------------------

CONTAINER_CREATE: Spec = {
    "name": Field(str, default="", check=name_of("container", empty_ok=True)),
    "net": Field(str, default="", check=_ref),
    "publish_service": Field(str, default="", check=_publish),
    "env": Field(env, default={}),
    "cmd": Field(list[str], default=["/bin/sh"], check=_cmd),
    "detach": Field(bool, default=False),
    "rm": Field(bool, default=False),
    "tty": Field(bool, default=False),
    "interactive": Field(bool, default=False),
    "links": Field(list[str], default=[], check=_links),
    "privileged": Field(bool, default=False),
}

NETWORK_CREATE: Spec = {
    "name": Field(str, required=True, check=name_of("network")),
    "driver": Field(str, default="overlay"),
    "subnet": Field(str, check=_subnet),
    "gateway": Field(str, check=_address),
}

ENDPOINT_REF: Spec = {
    "container_id": Field(str, required=True, check=_segment),
    "ifname": Field(str, required=True, check=_ifname),
}

ENDPOINT_ATTACH: Spec = {
    "network": Field(str, required=True, check=_ref),
    "container_id": Field(str, required=True, check=_segment),
    "netns": Field(str, required=True, check=_netns),
    "ifname": Field(str, default="eth0", check=_ifname),
    "name": Field(str, default="", check=name_of("endpoint", empty_ok=True)),
    "aliases": Field(list[str], default=[], check=_aliases),
    "ip": Field(str, check=_unicast),
    "mac": Field(str, check=_mac),
    "runtime": Field(str, required=True, check=_runtime),
    "service": Field(str, default="", check=name_of("service", empty_ok=True)),
}

ENDPOINT_GC: Spec = {
    "runtime": Field(str, required=True, check=_runtime),
    "keep": Field(Objects(ENDPOINT_REF, most=65536), default=[]),
}

STARTED: Spec = {"pid": Field(int, required=True, check=_range(1, PID_MAX))}

EXITED: Spec = {"code": Field(int, required=True, check=_range(-(1 << 31), (1 << 31) - 1))}
