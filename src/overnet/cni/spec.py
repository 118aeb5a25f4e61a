"""What the CNI specification fixes: versions, error codes, the error result."""

from __future__ import annotations

from ..api import wire

VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = VERSIONS[-1]

# The spec's well-known error codes (SPEC.md, section 5 "Error").
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
INTERNAL = 999  # what libcni's skel reports for any other failure


class CniError(Exception):
    """A failure reported to the runtime as the spec's error result on stdout, exit code 1."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, version: str) -> str:
        return wire.dumps({"cniVersion": version, "code": self.code, "msg": self.msg,
                           "details": self.details})


def parse_version(value: str) -> tuple[int, int, int]:
    """"1.0.0" -> (1, 0, 0); anything else is a decode failure naming the value."""
    parts = value.split(".") if isinstance(value, str) else []
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise CniError(DECODE_FAILURE, f"invalid cniVersion {value!r}: expected MAJOR.MINOR.PATCH")
    return int(parts[0]), int(parts[1]), int(parts[2])


def at_least(version: str, minimum: str) -> bool:
    return parse_version(version) >= parse_version(minimum)


def check_supported(version: str) -> None:
    parse_version(version)
    if version not in VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, "incompatible CNI versions",
                       f"config is {version!r}, plugin supports {list(VERSIONS)}")


def require(version: str, minimum: str, verb: str) -> None:
    """CHECK needs 0.4.0, GC and STATUS need 1.1.0 (as libcni's skel enforces)."""
    if not at_least(version, minimum):
        raise CniError(INCOMPATIBLE_VERSION, f"config version does not allow {verb}",
                       f"{verb} needs cniVersion >= {minimum}, the config has {version}")


def version_result(requested: str | None) -> dict:
    """The VERSION verb's answer: it echoes the version asked about when it is one we know."""
    version = requested if requested in VERSIONS else LATEST
    return {"cniVersion": version, "supportedVersions": list(VERSIONS)}
