"""`host`: the container shares the host's network namespace."""

from .base import Driver


class HostDriver(Driver):
    name = "host"
    needs_netns = False
    needs_address = False
