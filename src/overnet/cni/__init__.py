"""overnet's CNI plugin, a thin client of the local agent, for Podman and containerd.

One executable (`overnet-cni`, also installed as `flannel` by `overnet cni install`) that
dispatches on the config's `type`:

- `overnet-cni` (any type but flannel): ADD/DEL/CHECK/GC/STATUS/VERSION through the agent's
  /endpoints API. Config fields: `cniVersion` (0.3.0 .. 1.1.0), `name`, `type`, `network`
  (the overnet network; default: `name`), `agentSocket` (default /run/overnet/overnet.sock),
  `pendingDir` (DELs kept while the agent is away; default cni-pending beside the socket),
  `prevResult`, `runtimeConfig` (capabilities `ips`, `mac`, `aliases`). CNI_ARGS `IP`, `MAC`,
  `K8S_POD_NAME` (the endpoint's DNS name; else the first 12 characters of the container ID).
- `flannel`: flannel's own CNI plugin over the subnet.env the agent writes (`subnetFile`,
  `dataDir`, `delegate`, `ipam`), delegating to bridge + host-local from CNI_PATH.

Kept free of heavy imports (no click, pyroute2, asyncio, json, re, socket): a runtime starts
one process per call, and that start is most of what the plugin itself costs.
"""
