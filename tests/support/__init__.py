"""Test kit shared by the unit, end-to-end and benchmark tests (echo backends, Envoy, HTTP, waiting)."""
