"""Imports the feature modules of the access-control families so they register themselves."""

from controlplane.translate.policies import (  # noqa: F401
    basicauth,
    bodysize,
    clientcert,
    extauth,
    ipaccess,
    ratelimit,
    tlsparams,
)
