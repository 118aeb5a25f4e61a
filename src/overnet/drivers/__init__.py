"""Network drivers. Adding one means a module here and one line in DRIVERS."""

from .base import Attachment, Driver, DriverOptions, HostInfo, RemotePeer
from .bridge import BridgeDriver
from .host import HostDriver
from .null import NullDriver
from .overlay import OverlayDriver

DRIVERS: dict[str, type[Driver]] = {
    cls.name: cls for cls in (NullDriver, HostDriver, BridgeDriver, OverlayDriver)}

__all__ = ["Attachment", "Driver", "DriverOptions", "HostInfo", "RemotePeer", "DRIVERS"]
