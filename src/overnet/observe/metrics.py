"""Prometheus metrics of one agent, named after Calico Felix's (`felix_*` -> `overnet_*`).

Everything is read at scrape time from the agent's own state by one custom collector, in a
registry of the agent's own (several agents share one process in unit tests): the agent's hot
paths pay nothing for metrics, except the store request counter (a dict increment)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .counting import COUNTED, CountingStore, counting  # noqa: F401 - callers import them here

RESYNC_STATES = {"waiting": 1, "resyncing": 2, "in-sync": 3}     # as felix_resync_state


class AgentCollector:
    """Reads one agent at collect time."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        a = self.agent
        if getattr(a, "view", None) is None:
            return
        yield from self._cluster(a)
        yield from self._reconcile(a)
        yield from self._store(a)
        yield from self._loops(a)
        yield from self._dns(a)

    def _cluster(self, a: Any) -> Iterator[Metric]:
        g = GaugeMetricFamily("overnet_cluster_num_hosts", "Hosts on the networks this "
                              "host's copy of the store holds, by state.", labels=["state"])
        nets = a.mirror.networks()
        g.add_metric(["registered"], len(set().union(*(a.view.hosts(n) for n in nets))))
        g.add_metric(["alive"], len(set().union(*(a.view.present(n) for n in nets))))
        yield g
        eps = GaugeMetricFamily("overnet_active_local_endpoints",
                                "Endpoints on this host, by network and runtime.",
                                labels=["network", "runtime"])
        per = Counter((ep.network_name, ep.runtime) for ep in a.endpoints.local.values())
        for (net, runtime), n in sorted(per.items()):
            eps.add_metric([net, runtime], n)
        yield eps
        peers = GaugeMetricFamily("overnet_remote_peers",
                                  "Remote endpoints programmed (FDB + neighbour), by network.",
                                  labels=["network"])
        for net_id, programmed in sorted(a.observer.programmed.items()):
            net = a.networks.get(net_id)
            peers.add_metric([net.name if net else net_id], len(programmed))
        yield peers

    def _reconcile(self, a: Any) -> Iterator[Metric]:
        t = a.observer.reconcile
        h = HistogramMetricFamily("overnet_reconcile_seconds",
                                  "Time to bring one network's data plane in step with the "
                                  "store.")
        h.add_metric([], t.cumulative(), t.sum)
        yield h
        rec = getattr(a, "reconciler", None)
        yield CounterMetricFamily("overnet_reconcile_failures",
                                  "Reconciles that failed (retried by the next event or "
                                  "resync).", value=rec.failures if rec else 0)

    def _store(self, a: Any) -> Iterator[Metric]:
        c = CounterMetricFamily("overnet_store_requests", "Store requests, by operation and "
                                "result.", labels=["operation", "result"])
        for (op, result), n in sorted(getattr(a.store, "requests", {}).items()):
            c.add_metric([op, result], n)
        yield c
        yield CounterMetricFamily("overnet_store_relists", "Re-lists of the store after a "
                                  "failed watch.", value=a.mirror.relists if a.mirror else 0)
        yield CounterMetricFamily("overnet_store_watch_resumes", "Watches resumed where "
                                  "they broke, without a list.",
                                  value=a.mirror.resumes if a.mirror else 0)
        yield GaugeMetricFamily("overnet_store_networks_in_scope", "Networks whose records "
                                "this host's copy of the store holds and watches.",
                                value=len(a.mirror.networks()) if a.mirror else 0)
        state = getattr(a.mirror, "state", "waiting") if a.mirror else "waiting"
        yield GaugeMetricFamily("overnet_resync_state", "Store sync: 1 waiting, 2 resyncing, "
                                "3 in sync.", value=RESYNC_STATES.get(state, 1))

    def _loops(self, a: Any) -> Iterator[Metric]:
        c = CounterMetricFamily("overnet_loop_restarts", "Restarts of background loops.",
                                labels=["loop"])
        for name, n in sorted(a.supervisor.restarts.items()):
            c.add_metric([name], n)
        yield c
        leases = CounterMetricFamily("overnet_lease_renewals", "Lease renewals: liveness "
                                     "(keep-alives) and subnet (flannel).", labels=["lease"])
        regrants = CounterMetricFamily("overnet_lease_regrants", "Liveness leases granted "
                                       "again after one was lost.", labels=["lease"])
        ka = a.keepalive
        leases.add_metric(["liveness"], getattr(ka, "refreshes", 0) if ka else 0)
        regrants.add_metric(["liveness"], ka.renewals if ka else 0)
        if a.hostsubnet is not None and a.hostsubnet.manager is not None:
            leases.add_metric(["subnet"], a.hostsubnet.manager.renewals)
        yield leases
        yield regrants

    def _dns(self, a: Any) -> Iterator[Metric]:
        c = CounterMetricFamily("overnet_dns_queries", "DNS queries answered, by network and "
                                "result.", labels=["network", "result"])
        stats = a.dns.stats() if getattr(a, "dns", None) is not None else {}
        for net_id, counts in sorted(stats.items()):
            net = a.networks.get(net_id)
            for result, n in sorted(counts.items()):
                c.add_metric([net.name if net else net_id, result], n)
        yield c


def registry(agent: Any) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(AgentCollector(agent))
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
