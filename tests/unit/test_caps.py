"""Capability arithmetic of contained containers (pure; applying them is tested for real in
tests/integration/test_containment.py)."""

from __future__ import annotations

import pytest

from overnet.runtime import caps


def test_docker_default_set_is_dockers_capeff() -> None:
    # /proc/PID/status of a `docker run` process shows CapEff: 00000000a80425fb
    assert caps.KEEP == 0xA80425FB
    assert caps.mask(caps.DOCKER_DEFAULT) == caps.KEEP


def test_what_is_kept_and_what_is_not() -> None:
    kept = set(caps.names(caps.KEEP))
    assert kept == set(caps.DOCKER_DEFAULT)
    assert {"NET_RAW", "KILL", "CHOWN", "SETUID"} <= kept
    assert not {"SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "SYS_MODULE", "DAC_READ_SEARCH",
                "BPF", "PERFMON", "SYS_RAWIO"} & kept


def test_mask_and_names_round_trip() -> None:
    assert caps.mask(["CAP_NET_RAW", "sys_admin"]) == (1 << 13) | (1 << 21)
    assert caps.names((1 << 13) | (1 << 21) | (1 << 63)) == ["NET_RAW", "SYS_ADMIN", "63"]
    assert caps.names(0) == []
    with pytest.raises(ValueError, match="unknown capability 'CAP_FLY'"):
        caps.mask(["CAP_FLY"])


def test_to_drop_covers_every_other_capability_of_the_kernel() -> None:
    drop = caps.to_drop(caps.KEEP, 40)
    assert len(drop) == 41 - len(caps.DOCKER_DEFAULT)
    assert 21 in drop and 12 in drop and 13 not in drop
    assert set(drop) | {n for n in range(41) if caps.KEEP >> n & 1} == set(range(41))
    # a newer kernel's capabilities (beyond the names we know) are dropped too
    assert caps.to_drop(caps.KEEP, 45)[-5:] == [41, 42, 43, 44, 45]


def test_split_words_for_capset() -> None:
    assert caps.split_words(caps.KEEP) == (0xA80425FB, 0)
    assert caps.split_words((1 << 40) | 1) == (1, 1 << 8)
