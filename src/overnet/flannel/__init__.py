"""Flannel-compatible host subnets: flannel's etcd layout, lease logic and backends."""
