"""The Knative frontend: Knative Serving's internal Ingress (KIngress,
`networking.internal.knative.dev/v1alpha1`) -> the frontend-neutral IR, and its status."""
