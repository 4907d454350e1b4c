"""Meridian: a multi-cluster Ingress control plane for Envoy gateways."""

__version__ = "0.1.0"
