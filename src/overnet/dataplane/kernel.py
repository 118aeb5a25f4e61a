"""The Kernel: one agent's netlink operations, composed from the modules that do each job.

    plumbing.py  sockets per namespace, errors (`failing`), small netlink helpers
    links.py     reading devices (LinkInfo) and the underlay's MTU
    bridge.py    bridges (local bridge driver)
    veth.py      attach / detach of containers to a bridge (the local bridge driver)
    macvlan.py   attach / detach of containers to an overlay network (a macvlan of vxlan0)
    vxlan.py     overlay network namespaces (vxlan0 + gw0) and their remote peers
    routes.py    host subnets (flannel backends): flannel.N device, routes, host-gw

Every operation is idempotent and raises DataplaneError naming device, namespace and value.
A Kernel is bound to the thread that first uses it (see plumbing.Netlink); the agent runs it on
its one kernel thread (worker.py), behind the async `Dataplane` of api.py.
"""

from __future__ import annotations

from overnet.dataplane import bridge, macvlan, routes, veth, vxlan
from overnet.dataplane import links as _links
from overnet.dataplane.model import (
    BRIDGE,
    VXLAN,
    VXLAN_OVERHEAD,
    VXLAN_PORT,
    DataplaneError,
    LinkInfo,
)
from overnet.dataplane.plumbing import Netlink, failing, get_link, single

__all__ = ["BRIDGE", "VXLAN", "VXLAN_OVERHEAD", "VXLAN_PORT", "DataplaneError", "Kernel",
           "LinkInfo"]

_failing = failing  # older name, kept for callers outside the dataplane
_single = single


class Kernel(Netlink):
    """Idempotent netlink operations for one agent; use from a single thread.

    Namespaces are named by path; `None` means the home (host) namespace: `host_ns` if given,
    otherwise the namespace of the thread that constructed the Kernel. The methods are the
    module functions of the same name, with the Kernel as their first argument.
    """

    # host and reading
    underlay_mtu = _links.underlay_mtu
    link_info = _links.link_info
    links = _links.links
    # bridges (host namespace)
    ensure_bridge = bridge.ensure_bridge
    remove_bridge = bridge.remove_bridge
    # overlay networks
    ensure_overlay = vxlan.ensure_overlay
    remove_overlay = vxlan.remove_overlay
    vxlan_info = vxlan.vxlan_info
    peers = vxlan.peers
    add_peer = vxlan.add_peer
    add_peers = vxlan.add_peers
    remove_peer = vxlan.remove_peer
    # containers
    attach = veth.attach
    detach = veth.detach
    attach_macvlan = macvlan.attach
    attach_handover = macvlan.handover
    detach_macvlan = macvlan.detach
    # host subnets (flannel backends), host namespace
    underlay = routes.underlay
    ensure_vxlan = routes.ensure_vxlan
    remove_link = routes.remove_link
    vxlan_peers = routes.vxlan_peers
    sync_vxlan = routes.sync_vxlan
    gw_routes = routes.gw_routes
    sync_gw = routes.sync_gw

    # Older private names, still used by code outside the dataplane package.
    _ipr = Netlink.socket
    _get = staticmethod(get_link)
