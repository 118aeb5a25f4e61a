"""The invocation: CNI_* environment variables, validated per verb as libcni's skel does."""

from __future__ import annotations

from .spec import INVALID_ENVIRONMENT, CniError

VERBS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")

# Which variables a verb cannot do without (SPEC.md, section 2).
REQUIRED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
}

# CNI_ARGS keys this plugin understands; any other is an error unless IgnoreUnknown is set.
KNOWN_ARGS = {"IgnoreUnknown", "K8S_POD_NAME", "K8S_POD_NAMESPACE", "K8S_POD_INFRA_CONTAINER_ID",
              "K8S_POD_UID", "IP", "MAC"}

_ID_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_ID_REST = _ID_FIRST | frozenset("_.-")


class Invocation:
    """One run of the plugin: what the runtime asked for, and where."""

    __slots__ = ("args", "command", "container_id", "environ", "ifname", "netns", "path")

    def __init__(self, command: str, container_id: str = "", netns: str = "", ifname: str = "",
                 args: dict[str, str] | None = None, path: list[str] | None = None,
                 environ: dict[str, str] | None = None) -> None:
        self.command = command
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.args = args or {}
        self.path = path or []
        self.environ = environ or {}


def parse_env(environ: dict[str, str]) -> Invocation:
    command = environ.get("CNI_COMMAND", "")
    if not command:
        raise CniError(INVALID_ENVIRONMENT, "required env variables [CNI_COMMAND] missing")
    if command not in VERBS:
        raise CniError(INVALID_ENVIRONMENT, f"unknown CNI_COMMAND {command!r}",
                       f"expected one of {', '.join(VERBS)}")
    missing = [v for v in REQUIRED.get(command, ()) if not environ.get(v)]
    if missing:
        raise CniError(INVALID_ENVIRONMENT, f"required env variables [{','.join(missing)}] missing")
    inv = Invocation(command, environ.get("CNI_CONTAINERID", ""), environ.get("CNI_NETNS", ""),
                     environ.get("CNI_IFNAME", ""), parse_args(environ.get("CNI_ARGS", "")),
                     [p for p in environ.get("CNI_PATH", "").split(":") if p], dict(environ))
    if command in REQUIRED:
        validate_container_id(inv.container_id)
        validate_ifname(inv.ifname)
    return inv


def parse_args(value: str) -> dict[str, str]:
    """CNI_ARGS "IgnoreUnknown=1;K8S_POD_NAME=web": KEY=VALUE pairs split by semicolons."""
    pairs: dict[str, str] = {}
    for item in value.split(";"):
        if not item:
            continue
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENVIRONMENT, f"invalid CNI_ARGS pair {item!r}",
                           "expected KEY=VALUE pairs separated by ';'")
        pairs[key] = val
    ignore = pairs.get("IgnoreUnknown", "").lower() in ("1", "true")
    unknown = sorted(k for k in pairs if k not in KNOWN_ARGS)
    if unknown and not ignore:
        raise CniError(INVALID_ENVIRONMENT, f"unknown CNI_ARGS key {unknown[0]!r}",
                       "set IgnoreUnknown=1 to skip keys this plugin does not know")
    return pairs


def validate_container_id(value: str) -> None:
    if value[0] not in _ID_FIRST or not set(value) <= _ID_REST:
        raise CniError(INVALID_ENVIRONMENT, f"invalid characters in CNI_CONTAINERID {value!r}",
                       "it must start with a letter or digit, then letters, digits, _ . -")


def validate_ifname(value: str) -> None:
    if len(value) > 15:
        raise CniError(INVALID_ENVIRONMENT, f"CNI_IFNAME {value!r} is too long",
                       "an interface name has at most 15 characters")
    if value in (".", "..") or any(c in "/:" or c.isspace() for c in value):
        raise CniError(INVALID_ENVIRONMENT, f"invalid CNI_IFNAME {value!r}",
                       "an interface name is not . or .. and has no / : or whitespace")
