"""The Ingress frontend: Ingress objects (and ingress-nginx annotations) in, IR out.

- classes: which Ingresses are Meridian's;
- convert: one Ingress -> IngressIR (its rules, TLS bindings, annotation policies, findings);
- hosts: the merge and conflict rules of one host across Ingresses (canary, defaultBackend, ssl-redirect);
- tls: which certificate and TLS policies each host gets, and which hosts pass TLS through;
- secrets: TLS Secrets checked before Envoy sees them;
- annotations/: one module per annotation family; registry: the table of families.

Nothing here knows Envoy: the frontend never imports controlplane.translate or controlplane.xds.
"""
