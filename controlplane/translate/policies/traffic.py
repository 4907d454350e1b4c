"""Imports the feature modules of the traffic families so they register themselves."""

from controlplane.translate.policies import (  # noqa: F401
    backend,
    cors,
    errors,
    loadbalancing,
    mirror,
    redirects,
    timeouts,
)
