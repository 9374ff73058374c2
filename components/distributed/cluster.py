"""Joining or starting Ray, and per-trial resources derived from what the cluster has."""
from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import ray

from components.errors import ConfigError


def _check_address(address: str, timeout: float) -> None:
    if address in ("", "auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if parsed.hostname is None or parsed.port is None:
        raise ConfigError(f"ray_address {address!r}: expected host:port, ray://host:port or 'auto'")
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(f"Ray cluster at {address} is unreachable ({exc}); start it with `ray start --head` "
                          f"or leave ray_address empty to run a local Ray") from None


def connect(address: str = "", num_cpus: int | None = None, timeout: float = 5.0) -> dict[str, float]:
    """Start a local Ray (address '') or join one ('auto', host:port, ray://host:port); returns its resources."""
    _check_address(address, timeout)
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return dict(ray.cluster_resources())


def trial_resources(cluster: dict[str, float], cpus_per_trial: int = 1) -> dict[str, float]:
    """One GPU per trial when the cluster has GPUs, otherwise CPUs only (a GPU request would never schedule)."""
    cpus = max(1, min(cpus_per_trial, int(cluster.get("CPU", 1))))
    if cluster.get("GPU", 0) >= 1:
        return {"cpu": cpus, "gpu": 1}
    return {"cpu": cpus}
