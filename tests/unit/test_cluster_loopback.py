"""A local cluster listens on loopback only."""
from __future__ import annotations

import ipaddress
import sys

from support import run_in_own_session


def test_local_cluster_listens_on_loopback_only(tmp_path):
    script = """
import os, ray, psutil
from rlhf_platform.roles.ray_executor import connect_ray
from rlhf_platform.config import RayConfig
connect_ray(RayConfig(num_cpus=1, include_dashboard=False))

@ray.remote(num_cpus=0)
class Probe:
    def ip(self):
        return ray.util.get_node_ip_address()

print("actor", ray.get(Probe.remote().ip.remote()))
pids = {p.pid for p in psutil.Process().children(recursive=True)} | {os.getpid()}
for c in psutil.net_connections(kind="tcp"):
    if c.status == psutil.CONN_LISTEN and c.pid in pids:
        print("listen", c.laddr.ip)
ray.shutdown()
"""
    returncode, stdout, stderr = run_in_own_session([sys.executable, "-c", script], tmp_path / "probe", timeout_s=180)
    assert returncode == 0, stderr[-2000:]
    lines = stdout.splitlines()
    assert "actor 127.0.0.1" in lines
    listening = {ipaddress.ip_address(line.split()[1]) for line in lines if line.startswith("listen")}
    outside = {ip for ip in listening if not (ip.is_loopback or getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)}
    assert listening and not outside, outside
