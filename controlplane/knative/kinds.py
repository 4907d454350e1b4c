"""Names Knative's networking API gives the KIngress (knative.dev/networking pkg/apis/networking)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GROUP = "networking.internal.knative.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
PLURAL = "ingresses"
KIND = "Ingress"  # the object's own `kind`; the stores call it KINGRESS (controlplane.store)

# The annotation that picks the implementation (register.go IngressClassAnnotationKey), and the
# older spelling Knative still accepts (IngressClassAnnotationAltKey).
CLASS_KEY = "networking.knative.dev/ingress.class"
CLASS_ALT_KEY = "networking.knative.dev/ingress-class"
CLASS = "meridian.ingress.networking.knative.dev"

EXTERNAL = "ExternalIP"
CLUSTER_LOCAL = "ClusterLocal"

HTTP_ENABLED = "Enabled"
HTTP_REDIRECTED = "Redirected"

# Service ports Knative serves over HTTP/2 cleartext (ports.go: ServicePortNameH2C is "http2"; older
# releases named it "h2c"), and appProtocol values saying the same.
H2C_PORT_NAMES = frozenset({"http2", "h2c", "grpc"})
H2C_APP_PROTOCOLS = frozenset({"kubernetes.io/h2c", "h2c", "grpc"})


def is_kingress(obj: Mapping[str, Any]) -> bool:
    """A manifest that is a KIngress (kind Ingress of Knative's internal networking group)."""
    return obj.get("kind") == KIND and str(obj.get("apiVersion") or "").startswith(GROUP + "/")


def ingress_class(obj: Mapping[str, Any]) -> str | None:
    ann = (obj.get("metadata") or {}).get("annotations") or {}
    if not isinstance(ann, Mapping):
        return None
    value = ann.get(CLASS_KEY, ann.get(CLASS_ALT_KEY))
    return None if value is None else str(value)


def is_ours(obj: Mapping[str, Any]) -> bool:
    return ingress_class(obj) == CLASS
