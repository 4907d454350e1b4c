"""Feature modules: each renders one kind of policy into Envoy resources.

`FEATURES` is the translator's one table of them, in HTTP filter order (a feature's
`filter_order`; equal orders keep the order of this list, which also orders the patches of a
route). Nothing registers itself on import: a feature that is not listed here is not used.
"""

from __future__ import annotations

from controlplane.translate.features import Feature
from controlplane.translate.policies.backend import BackendFeature
from controlplane.translate.policies.basicauth import BasicAuthFeature
from controlplane.translate.policies.bodysize import BodySizeFeature
from controlplane.translate.policies.clientcert import ClientCertFeature
from controlplane.translate.policies.cors import CorsFeature
from controlplane.translate.policies.errors import ErrorsFeature
from controlplane.translate.policies.extauth import AuthResponsesFeature, ExtAuthFeature
from controlplane.translate.policies.fallback import FallbackFeature
from controlplane.translate.policies.headerpattern import HeaderPatternFeature
from controlplane.translate.policies.headers import ResponseHeadersFeature
from controlplane.translate.policies.httproute import (
    ClusterMirrorFeature,
    HeaderEditsFeature,
    PathRewriteFeature,
    RequestTimeoutFeature,
)
from controlplane.translate.policies.httpslocation import HttpsLocationFeature
from controlplane.translate.policies.ipaccess import IpAccessFeature
from controlplane.translate.policies.loadbalancing import LoadBalancingFeature
from controlplane.translate.policies.mirror import MirrorFeature
from controlplane.translate.policies.ratelimit import RateLimitFeature
from controlplane.translate.policies.redirects import RedirectFeature, RedirectOriginFeature
from controlplane.translate.policies.rewrite import RewriteFeature
from controlplane.translate.policies.signinuri import SigninUriFeature
from controlplane.translate.policies.timeouts import TimeoutsFeature
from controlplane.translate.policies.tlsparams import TlsParamsFeature

# A list (not a tuple) so a test can add a deliberately broken feature and remove it again.
FEATURES: list[Feature] = sorted(
    [
        IpAccessFeature(),
        CorsFeature(),
        ErrorsFeature(),
        RateLimitFeature(),
        AuthResponsesFeature(),
        SigninUriFeature(),
        BasicAuthFeature(),
        ExtAuthFeature(),
        RewriteFeature(),
        ClientCertFeature(),
        TlsParamsFeature(),
        BackendFeature(),
        LoadBalancingFeature(),
        MirrorFeature(),
        RedirectFeature(),
        TimeoutsFeature(),
        BodySizeFeature(),
        HeaderEditsFeature(),
        PathRewriteFeature(),
        RequestTimeoutFeature(),
        ClusterMirrorFeature(),
        ResponseHeadersFeature(),
        FallbackFeature(),
        HttpsLocationFeature(),
        RedirectOriginFeature(),
        HeaderPatternFeature(),
    ],
    key=lambda f: f.filter_order,
)

# The features that replace a route by several (their order is the order of expansion).
EXPANDING: list[Feature] = [f for f in FEATURES if type(f).expand_route is not Feature.expand_route]
