"""xDS type URLs and the order in which resource types are pushed."""

from __future__ import annotations

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SCOPED_ROUTE = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# Make before break: clusters and their endpoints exist before listeners and
# routes refer to them; certificates last (listeners wait for them anyway).
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE, ROUTE, SECRET)

SHORT_NAMES = {
    CLUSTER: "CDS",
    ENDPOINT: "EDS",
    LISTENER: "LDS",
    SCOPED_ROUTE: "SRDS",
    ROUTE: "RDS",
    SECRET: "SDS",
}

# Types for which a State-of-the-World response must carry every resource.
FULL_STATE_TYPES = frozenset({CLUSTER, LISTENER, SCOPED_ROUTE})


def message_class(type_url: str) -> type:
    """The protobuf class for a type URL (for debug output and tests)."""
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.endpoint.v3 import endpoint_pb2
    from envoy.config.listener.v3 import listener_pb2
    from envoy.config.route.v3 import route_pb2, scoped_route_pb2
    from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

    return {
        CLUSTER: cluster_pb2.Cluster,
        ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
        LISTENER: listener_pb2.Listener,
        SCOPED_ROUTE: scoped_route_pb2.ScopedRouteConfiguration,
        ROUTE: route_pb2.RouteConfiguration,
        SECRET: secret_pb2.Secret,
    }[type_url]


def decode(type_url: str, any_bytes: bytes) -> dict:
    """Any bytes -> a JSON-able dict in Envoy's field names; secret key material is redacted."""
    from google.protobuf import any_pb2, json_format

    wrapper = any_pb2.Any.FromString(any_bytes)
    msg = message_class(type_url).FromString(wrapper.value)
    import json

    out = json.loads(json_format.MessageToJson(msg, preserving_proto_field_name=True, indent=None))
    if type_url == SECRET:
        redact_secret(out)
    elif type_url == ROUTE:
        redact_users(out)
    return out


_PER_ROUTE_USERS = "type.googleapis.com/envoy.extensions.filters.http.basic_auth.v3.BasicAuthPerRoute"


def redact_users(obj: object) -> None:
    """Basic-auth password hashes (a route's BasicAuthPerRoute users) are never shown."""
    if isinstance(obj, dict):
        if obj.get("@type") == _PER_ROUTE_USERS and "users" in obj:
            obj["users"] = {"inline_string": "[redacted]"}
        for value in obj.values():
            redact_users(value)
    elif isinstance(obj, list):
        for value in obj:
            redact_users(value)


def redact_secret(obj: dict) -> None:
    cert = obj.get("tls_certificate") or {}
    if "private_key" in cert:
        cert["private_key"] = {"inline_bytes": "[redacted]"}
