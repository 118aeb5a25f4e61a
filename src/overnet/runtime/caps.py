"""Linux capabilities: the set a contained container keeps, and dropping the rest.

Containers keep Docker's default set (what `docker run` without --cap-add gives), so that what
works in a Docker container works here, and nothing that reaches past the container does: no
CAP_SYS_ADMIN (mount, setns, unshare), no CAP_NET_ADMIN (links, routes, firewall), no
CAP_SYS_PTRACE, no CAP_SYS_MODULE. CAP_NET_RAW stays: ping needs it.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# Numbers from <linux/capability.h>.
CAPS: dict[str, int] = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
    "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15,
    "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20,
    "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
    "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}

DOCKER_DEFAULT = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
                  "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
                  "AUDIT_WRITE")


def mask(names: tuple[str, ...] | list[str]) -> int:
    """The bit mask of capability names (as /proc/PID/status shows it in hex)."""
    bits = 0
    for name in names:
        try:
            bits |= 1 << CAPS[name.upper().removeprefix("CAP_")]
        except KeyError:
            raise ValueError(f"unknown capability {name!r}") from None
    return bits


def names(bits: int) -> list[str]:
    """The names of the capabilities in `bits`, by number; unnamed bits as their number."""
    by_number = {n: name for name, n in CAPS.items()}
    return [by_number.get(n, str(n)) for n in range(bits.bit_length()) if bits >> n & 1]


KEEP = mask(DOCKER_DEFAULT)   # 0xa80425fb, Docker's CapEff


def to_drop(keep: int, last_cap: int) -> list[int]:
    """The capability numbers 0..last_cap not in `keep` (what leaves the bounding set)."""
    return [n for n in range(last_cap + 1) if not keep >> n & 1]


def split_words(bits: int) -> tuple[int, int]:
    """capset's two 32-bit words (low, high) of a 64-bit mask."""
    return bits & 0xFFFFFFFF, (bits >> 32) & 0xFFFFFFFF


def last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


# --- applying them (in a forked child, before exec) ------------------------------------------

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.capset.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]
_libc.capget.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, what)


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> None:
    _check(_libc.prctl(option, arg2, arg3, 0, 0), f"prctl({option})")


def permitted() -> int:
    """This process's permitted set."""
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    return data[0].permitted | data[1].permitted << 32


def restrict(keep: int = KEEP) -> None:
    """Limit this process and everything it executes to the capabilities in `keep`: bounding
    set, ambient, effective, permitted and (emptied) inheritable sets, plus no_new_privs so
    that no setuid or file-capability binary can get the others back."""
    for n in to_drop(keep, last_cap()):
        _check(_libc.prctl(PR_CAPBSET_DROP, n, 0, 0, 0), f"cannot drop capability {n}")
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = _CapHeader(_CAP_VERSION_3, 0)
    low, high = split_words(keep & permitted())  # capset cannot add what we lack
    data = (_CapData * 2)(_CapData(low, low, 0), _CapData(high, high, 0))
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    prctl(PR_SET_NO_NEW_PRIVS, 1)
