"""A fake Kubernetes API server for tests (real REST list/watch protocol on loopback)."""

from .server import FakeKube, Write

__all__ = ["FakeKube", "Write"]
