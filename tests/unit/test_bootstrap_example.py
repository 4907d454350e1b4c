"""envoy/bootstrap-example.yaml is what `meridian bootstrap` prints today (docs must not drift)."""

from __future__ import annotations

from pathlib import Path

import yaml

from controlplane.bootstrap import XdsClientTls, render_bootstrap

ROOT = Path(__file__).resolve().parents[2]


def test_example_bootstrap_matches_the_command():
    example = yaml.safe_load((ROOT / "envoy" / "bootstrap-example.yaml").read_text())
    state = "/home/you/.cache/meridian"  # where `meridian bootstrap` finds the local CA by default
    tls = XdsClientTls(ca=f"{state}/xds-ca.pem", cert=f"{state}/clients/group-edge.pem",
                       key=f"{state}/clients/group-edge-key.pem")  # fmt: skip
    assert example == render_bootstrap(xds_address="127.0.0.1:18000", node_id="gw-1", node_cluster="edge", tls=tls)
    assert example["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"
