"""overnet's CNI plugin `overnet-cni` (also installed as `flannel`): a thin client of the local
agent. Kept free of heavy imports: a runtime starts one process per ADD/DEL/CHECK."""
