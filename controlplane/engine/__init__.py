"""The incremental engine's parts; controlplane/controller.py puts them together.

- batcher: store events in (any thread), one batch per event-loop turn out;
- ingresses: each Ingress's object and IR, their states and indexes;
- dependencies: which Ingresses a changed host, Service or Secret touches;
- host_routes: per-host virtual host bytes, the HTTP filters and extra clusters they need;
- backends: clusters and endpoint assignments per Service; tls: the TLS plan and SDS secrets;
- view: the read-only view of the results that status, admin and reports read.
"""
