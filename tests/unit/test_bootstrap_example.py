"""envoy/bootstrap-example.yaml is what `meridian bootstrap` prints today (docs must not drift)."""

from __future__ import annotations

from pathlib import Path

import yaml

from controlplane.bootstrap import render_bootstrap

ROOT = Path(__file__).resolve().parents[2]


def test_example_bootstrap_matches_the_command():
    example = yaml.safe_load((ROOT / "envoy" / "bootstrap-example.yaml").read_text())
    assert example == render_bootstrap(xds_address="127.0.0.1:18000", node_id="gw-1", node_cluster="edge")
    assert example["dynamic_resources"]["ads_config"]["api_type"] == "GRPC"
