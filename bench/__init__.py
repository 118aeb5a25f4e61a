"""overnet's benchmarks: `sudo .venv/bin/python -m bench all` (see bench/README.md)."""
