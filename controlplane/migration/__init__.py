"""`meridian translate --to gateway-api --verify`: the Ingresses and the Gateway API objects exported
for them served side by side by real Envoys, and the same requests replayed against both.

- standins: the manifests completed so every backend answers with who it is (echo backends) and
  every TLS host has a certificate;
- probes: the request set derived from each Ingress rule;
- stage: two file-mode Meridians, each driving its own Envoy;
- replay: the requests sent to both Envoys and the answers compared, per Ingress.
"""
