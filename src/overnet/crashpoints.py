"""Named points where a test can make the agent die at once (SIGKILL, like `kill -9`).

The reliability tests arm one point through the environment (OVERNET_CRASH_AT=NAME) of the
agent they start, then check that a restarted agent leaves nothing behind. Unarmed, a point
costs one string comparison."""

from __future__ import annotations

import os
import signal

_ARMED = os.environ.get("OVERNET_CRASH_AT", "")


def crashpoint(name: str) -> None:
    if name == _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
