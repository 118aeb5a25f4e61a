"""overnet's CNI plugin, a thin client of the local agent, for Podman and containerd.

One Python entry point (main.py; installed by `overnet cni install` as `flannel` and as
`overnet-cni-python`) that dispatches on the config's `type`. `overnet-cni` itself is a small
compiled shim (shim/overnet_cni.c) that hands the whole call to the agent's POST /cni, where
this same code runs (api/cniroute.py), and execs the Python entry point for what it leaves
(VERSION, flannel, an agent it cannot reach, configs with escapes):

- `overnet-cni` (any type but flannel): ADD/DEL/CHECK/GC/STATUS/VERSION through the agent's
  /endpoints API. Config fields: `cniVersion` (0.3.0 .. 1.1.0), `name`, `type`, `network`
  (the overnet network; default: `name`), `agentSocket` (default /run/overnet/overnet.sock),
  `pendingDir` (DELs kept while the agent is away; default cni-pending beside the socket),
  `prevResult`, `runtimeConfig` (capabilities `ips`, `mac`, `aliases`). CNI_ARGS `IP`, `MAC`,
  `K8S_POD_NAME` (the endpoint's DNS name; else the first 12 characters of the container ID).
- `flannel`: flannel's own CNI plugin over the subnet.env the agent writes (`subnetFile`,
  `dataDir`, `delegate`, `ipam`), delegating to bridge + host-local from CNI_PATH.

Kept free of heavy imports (no click, pyroute2, asyncio, json, re, socket): when the Python
plugin runs as its own process (the fallback), that start is most of what it costs.
"""
