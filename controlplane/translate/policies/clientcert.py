"""ClientCert -> client certificate validation on the host's TLS chain, checked per request as nginx
does; PassClientCert -> header.

nginx completes the TLS handshake whatever the client presents and answers per request: with
`ssl_verify_client on` a request without a certificate gets 400 "No required SSL certificate was
sent" (its 496), with `on` or `optional` a certificate that fails verification gets 400 "The SSL
certificate error" (495); `error_page 495 496 = URL` (auth-tls-error-page) turns both into a 302 to
the URL, and auth-tls-match-cn's `if ($ssl_client_s_dn !~ pattern) { return 403; }` follows. The
directives are the server's, so they hold for every request of the host. So the chain never refuses
the handshake (`require_client_certificate` off, untrusted chains accepted and recorded), and the
routes of the host (ClientCertCheck) run a Lua step first that reads the verdict Envoy recorded
(`peerCertificatePresented`, `peerCertificateValidated`) and the subject DN (RFC 2253, as nginx's
`$ssl_client_s_dn`) and answers as nginx.

The step is on the routes, not on the host's filter chain, because every HTTPS chain shares one
route table: a client could connect through another chain (the default certificate's catch-all, or
another host's SNI, where no certificate is asked for) and send the host's name in Host. nginx closes
that door in ngx_http_set_virtual_server: when the client sent an SNI name other than the request's
Host and the server Host selects verifies client certificates, it answers 421 Misdirected Request.
The step does the same before the certificate checks (without SNI nginx, and the step, go on to them:
no certificate was asked for, so `on` answers 400).
"""

from __future__ import annotations

import hashlib
import json

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from controlplane.ir import Route, TlsHost, VirtualHost
from controlplane.ir import pcre_syntax as px
from controlplane.ir.policies import ClientCert, ClientCertCheck, PassClientCert
from controlplane.protowire import pack_any
from controlplane.translate.features import Feature
from controlplane.translate.pcre_lua import NotCompiled, matcher_source

FILTER = "envoy.filters.http.lua/client-cert"

_STEP = """
local function page(status, title, text)
  return "<html>\\r\\n<head><title>" .. title .. "</title></head>\\r\\n<body>\\r\\n<center><h1>" .. status
    .. "</h1></center>\\r\\n<center>" .. text .. "</center>\\r\\n</body>\\r\\n</html>\\r\\n"
end

local function refuse(h, reason)
  if ERROR_PAGE ~= "" then
    h:respond({[":status"] = "302", ["location"] = ERROR_PAGE, ["content-type"] = "text/html"},
      page("302 Found", "302 Found", "Found"))
  else
    h:respond({[":status"] = "400", ["content-type"] = "text/html"},
      page("400 Bad Request", "400 " .. reason, reason))
  end
end

local function request_host(authority)
  -- nginx's ngx_http_validate_host: lower case, no port, no trailing dot
  local host = string.lower(authority or "")
  host = string.gsub(host, ":%d*$", "")
  host = string.gsub(host, "%.$", "")
  return host
end

function envoy_on_request(h)
  local ssl = h:streamInfo():downstreamSslConnection()
  if ssl == nil then
    return
  end
  local sni = string.lower(h:streamInfo():requestedServerName() or "")
  sni = string.gsub(sni, "%.$", "")
  if sni ~= "" and sni ~= request_host(h:headers():get(":authority")) then
    -- "client attempted to request the server name different from the one that was negotiated"
    h:respond({[":status"] = "421", ["content-type"] = "text/html"},
      "<html>\\r\\n<head><title>421 Misdirected Request</title></head>\\r\\n<body>\\r\\n"
      .. "<center><h1>421 Misdirected Request</h1></center>\\r\\n</body>\\r\\n</html>\\r\\n")
    return
  end
  local presented = ssl:peerCertificatePresented()
  if REQUIRED and not presented then
    return refuse(h, "No required SSL certificate was sent")
  end
  if VERIFIED and presented and not ssl:peerCertificateValidated() then
    return refuse(h, "The SSL certificate error")
  end
  if MATCH_CN then
    local dn = presented and ssl:subjectPeerCertificate() or ""
    if not pattern_search(dn) then
      h:respond({[":status"] = "403", ["content-type"] = "text/plain"}, "client certificate unauthorized")
    end
  end
end
"""

_NO_MATCHER = "function pattern_search(value) return nil end\n"


def _lua_string(value: str) -> str:
    """`value` as a Lua string literal (every byte escaped as decimal: nothing to misread)."""
    return '"' + "".join(f"\\{b}" for b in value.encode()) + '"'


def script(policy: ClientCert | ClientCertCheck) -> str:
    """The routes' check; a match-cn pattern the matcher cannot run matches nothing (403: fail closed)."""
    matcher = ""
    if policy.match_cn:
        try:
            matcher = matcher_source(px.parse(policy.match_cn).tree)
        except (px.PcreError, px.Unsupported, NotCompiled, RecursionError):
            matcher = _NO_MATCHER
    head = (
        "-- meridian auth-tls-verify-client (nginx ssl_verify_client, error_page 495 496, auth-tls-match-cn)\n"
        f"local REQUIRED = {'true' if policy.mode == 'on' else 'false'}\n"
        f"local VERIFIED = {'true' if policy.mode in ('on', 'optional') else 'false'}\n"
        f"local MATCH_CN = {'true' if policy.match_cn else 'false'}\n"
        f"local ERROR_PAGE = {_lua_string(policy.error_page)}\n"
    )
    return head + matcher + _STEP


def _key(check: ClientCertCheck) -> str:
    """The filter key of a check: its settings, from which `http_filters` rebuilds its script."""
    return json.dumps([check.mode, check.error_page, check.match_cn])


def _script_name(key: str) -> str:
    return "client-cert-" + hashlib.sha256(key.encode()).hexdigest()[:16]


class ClientCertFeature(Feature):
    name = "client-cert"
    filter_order = 30  # first: nginx answers 421 and certificate errors before any phase runs

    def patch_tls(
        self, host: TlsHost, chain: listener_components_pb2.FilterChain, ctx: tls_pb2.DownstreamTlsContext
    ) -> None:
        policy = host.policy(ClientCert)
        if policy is None:
            return
        # The request step answers as nginx; the handshake itself never fails on the certificate.
        ctx.require_client_certificate.value = False
        vc = ctx.common_tls_context.validation_context
        vc.trusted_ca.inline_bytes = policy.ca
        vc.max_verify_depth.value = policy.depth
        vc.trust_chain_verification = common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED
        # A resumed session skips verification, so Envoy would record no verdict for the step to read.
        ctx.disable_stateless_session_resumption = True
        ctx.disable_stateful_session_resumption = True

    def route_uses(self, route: Route) -> bool:
        return route.policy(ClientCertCheck) is not None

    def filter_keys(self, route: Route) -> frozenset[str]:
        check = route.policy(ClientCertCheck)
        return frozenset() if check is None else frozenset({_key(check)})

    def http_filters(self, keys: frozenset[str]) -> list[hcm_pb2.HttpFilter]:
        cfg = lua_pb2.Lua(stat_prefix="client_cert")
        for key in sorted(keys):
            cfg.source_codes[_script_name(key)].inline_string = script(ClientCertCheck(*json.loads(key)))
        return [hcm_pb2.HttpFilter(name=FILTER, typed_config=pack_any(cfg))]

    def patch_route(self, route: Route, pb: route_components_pb2.Route, vhost: VirtualHost) -> None:
        check = route.policy(ClientCertCheck)
        if check is not None:
            pb.typed_per_filter_config[FILTER].CopyFrom(pack_any(lua_pb2.LuaPerRoute(name=_script_name(_key(check)))))
        if route.policy(PassClientCert) is None:
            return
        # nginx's $ssl_client_escaped_cert: the URL-encoded PEM. Overwrite what a client may have sent.
        for name, value in (
            ("ssl-client-cert", "%DOWNSTREAM_PEER_CERT%"),
            ("ssl-client-subject-dn", "%DOWNSTREAM_PEER_SUBJECT%"),
            ("ssl-client-issuer-dn", "%DOWNSTREAM_PEER_ISSUER%"),
        ):
            opt = pb.request_headers_to_add.add()
            opt.header.key, opt.header.value = name, value
            opt.append_action = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
