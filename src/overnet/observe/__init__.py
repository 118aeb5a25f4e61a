"""Seeing inside the network: metrics (metrics.py), the event ring (events.py), what the
agent watches to emit events (observer.py), readiness (health.py) and `overnet doctor`
(doctor.py, path.py)."""

SANDBOX_ADDR = "0.0.0.0:9091"    # `sandbox up --metrics`: each lab host, in its own namespace
