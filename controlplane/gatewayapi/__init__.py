"""The Gateway API frontend (standard channel, transcribed from gateway-api v1.6.1): GatewayClass,
Gateway, HTTPRoute, GRPCRoute and ReferenceGrant -> the same IR as the Ingress frontend.

- kinds: kinds, API group, controller name, durations;
- listeners: which Gateways are ours and their listeners (ports, hostnames, allowedRoutes, certificates);
- refs: ReferenceGrant checks;
- httproute: one HTTPRoute rule -> IR routes (matches, filters, weighted backends, timeouts);
- grpcroute: one GRPCRoute rule -> IR routes (service/method and header matches, HTTP/2 backends);
- build: every object -> per-host route entries, TLS bindings and the status of every object;
- merge: a host's Gateway API routes merged with its Ingress routes (conflict rule);
- status: the leader writes GatewayClass, Gateway, HTTPRoute and GRPCRoute status;
- export, verify: Ingresses -> Gateway API objects, and whether those route the same.
"""
