"""`null` (the `none` network): a network namespace with only loopback."""

from .base import Driver


class NullDriver(Driver):
    name = "null"
    needs_address = False
