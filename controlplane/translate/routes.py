"""IR virtual hosts -> Envoy VirtualHost messages, and RouteConfigurations assembled from bytes.

A RouteConfiguration is a name plus a repeated VirtualHost field. Each virtual
host is serialized once when it changes; a RouteConfiguration is then the
concatenation of those cached bytes, so a change to one host of 10,000 costs
one VirtualHost serialization and a byte join, not a rebuild of the table.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import regex_pb2

from controlplane.ir import DirectResponse, Forward, HeaderMatch, QueryMatch, Redirect, Route, VirtualHost
from controlplane.protowire import varint
from controlplane.translate.common import url_redirect
from controlplane.translate.policies import EXPANDING, FEATURES

_VHOST_FIELD = route_pb2.RouteConfiguration.DESCRIPTOR.fields_by_name["virtual_hosts"].number

_REDIRECT_CODES = {
    301: rc_pb2.RedirectAction.MOVED_PERMANENTLY,
    302: rc_pb2.RedirectAction.FOUND,
    303: rc_pb2.RedirectAction.SEE_OTHER,
    307: rc_pb2.RedirectAction.TEMPORARY_REDIRECT,
    308: rc_pb2.RedirectAction.PERMANENT_REDIRECT,
}


def _regex(pattern: str) -> regex_pb2.RegexMatcher:
    return regex_pb2.RegexMatcher(regex=pattern)


def _header(h: HeaderMatch) -> rc_pb2.HeaderMatcher:
    m = rc_pb2.HeaderMatcher(name=h.name, invert_match=h.invert)
    if h.exact is not None:
        m.string_match.exact = h.exact
    elif h.regex is not None:
        m.string_match.safe_regex.CopyFrom(_regex(h.regex))
    else:
        m.present_match = True
    return m


def _query(q: QueryMatch) -> rc_pb2.QueryParameterMatcher:
    m = rc_pb2.QueryParameterMatcher(name=q.name)
    if q.exact is not None:
        m.string_match.exact = q.exact
    else:
        m.string_match.safe_regex.CopyFrom(_regex(q.regex or ""))
    return m


def route_message(route: Route, vhost: VirtualHost, *, default_idle_timeout: int = 60) -> rc_pb2.Route:
    pb = rc_pb2.Route(name=route.name)
    match = pb.match
    if route.match.kind == "exact":
        match.path = route.match.value
    elif route.match.kind == "prefix":
        if route.match.value == "/":
            match.prefix = "/"
        elif "?" in route.match.value or "#" in route.match.value:
            # Envoy rejects such a path_separated_prefix (and the whole route table with it); request
            # paths are matched without query or fragment, so the rule can never match: keep it inert.
            match.path = route.match.value
        else:
            match.path_separated_prefix = route.match.value
    elif route.match.kind == "string_prefix":
        match.prefix = route.match.value
    else:
        match.safe_regex.CopyFrom(_regex(route.match.value))
    if vhost.authority_regex:
        match.headers.append(_header(HeaderMatch(":authority", regex=vhost.authority_regex)))
    for h in route.headers:
        match.headers.append(_header(h))
    for q in route.query:
        match.query_parameters.append(_query(q))

    action = route.action
    if isinstance(action, Forward):
        ra = pb.route
        if action.single is not None:
            ra.cluster = action.single
        else:
            for wc in action.clusters:
                if wc.weight > 0:
                    added = ra.weighted_clusters.clusters.add(name=wc.cluster, weight={"value": wc.weight})
                    for name, value in wc.request_headers:
                        option = added.request_headers_to_add.add(header={"key": name, "value": value})
                        option.append_action = option.OVERWRITE_IF_EXISTS_OR_ADD
        # nginx has no total request timeout; Envoy's 15 s default must not leak in.
        ra.timeout.seconds = 0
        ra.idle_timeout.seconds = default_idle_timeout
    elif isinstance(action, Redirect):
        rd = pb.redirect
        if action.scheme == "https":
            rd.https_redirect = True
            if action.port:
                rd.port_redirect = action.port
        elif action.scheme is not None:
            rd.scheme_redirect = action.scheme
        if action.port and action.scheme != "https":
            rd.port_redirect = action.port
        if action.host:
            rd.host_redirect = action.host
        if action.prefix is not None:
            rd.prefix_rewrite = action.prefix
        if action.path:
            rd.path_redirect = action.path
        elif action.strip_trailing_slash:
            rd.regex_rewrite.pattern.regex = "^(.*)/$"
            rd.regex_rewrite.substitution = "\\1"
        if action.url:
            url_redirect(rd, action.url)
        rd.response_code = _REDIRECT_CODES.get(action.code, rc_pb2.RedirectAction.MOVED_PERMANENTLY)
    elif isinstance(action, DirectResponse):
        pb.direct_response.status = action.status
        if action.body:
            pb.direct_response.body.inline_string = action.body
        for name, value in action.headers:
            added = pb.response_headers_to_add.add(header={"key": name, "value": value})
            added.append_action = added.OVERWRITE_IF_EXISTS_OR_ADD
    for feature in FEATURES:
        feature.patch_route(route, pb, vhost)
    return pb


def expanded_routes(route: Route) -> list[Route]:
    """`route`, or the routes features put in its place (CORS preflights)."""
    routes = [route]
    for feature in EXPANDING:
        routes = [out for r in routes for out in (feature.expand_route(r) or [r])]
    return routes


def vhost_message(vhost: VirtualHost, *, default_idle_timeout: int = 60) -> rc_pb2.VirtualHost:
    pb = rc_pb2.VirtualHost(name=vhost.name, domains=list(vhost.domains))
    for r in vhost.routes:
        for out in expanded_routes(r):
            pb.routes.append(route_message(out, vhost, default_idle_timeout=default_idle_timeout))
    for feature in FEATURES:
        feature.patch_vhost(vhost, pb)
    return pb


def vhost_bytes(vhost: VirtualHost) -> bytes:
    return vhost_message(vhost).SerializeToString(deterministic=True)


_VHOST_TAG = varint((_VHOST_FIELD << 3) | 2)


def framed_vhost(vh: bytes) -> bytes:
    """One serialized VirtualHost as a complete `virtual_hosts` field (tag + length + bytes).

    Callers cache this per host, so assembling a 10,000-host table is one bytes join rather
    than 10,000 varint encodings per change.
    """
    return _VHOST_TAG + varint(len(vh)) + vh


def route_configuration_from_frames(name: str, frames: Iterable[bytes], *, ignore_port: bool = True) -> bytes:
    """Serialized RouteConfiguration from `framed_vhost` outputs, in order."""
    head = route_pb2.RouteConfiguration(name=name, ignore_port_in_host_matching=ignore_port)
    return head.SerializeToString(deterministic=True) + b"".join(frames)
