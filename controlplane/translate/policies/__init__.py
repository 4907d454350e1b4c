"""Feature modules: each applies one annotation family's policies to Envoy resources.

Importing this package registers every feature (see controlplane.translate.features).
"""

from controlplane.translate.policies import rewrite, security, traffic  # noqa: F401
