"""The Docker network and IPAM plugin (`overnet agent --docker-plugin`).

Docker 20.10 without swarm takes only `local`-scope remote drivers and keeps its networks per
host, so `docker network create -d overnet --ipam-driver overnet NAME` on each host maps that
host's Docker network onto the one cluster-wide overnet network NAME. Docker tells neither the
IPAM driver nor the network driver the network's name: the plugin asks dockerd's own API for it
(dockerapi.py). The pieces:

    dockerapi.py  reading dockerd's networks (name, options, IPAM subnet) over its socket
    bindings.py   Docker network / IPAM pool -> overnet network
    ipam.py       IpamDriver.*: addresses held through the agent's endpoint service
    driver.py     NetworkDriver.*: endpoints attached through the endpoint service
    server.py     the plugin socket: routes, errors as {"Err": ...}
"""
