"""The certificates TLS Secrets can serve right now, by SDS name.

What a Secret holds now decides, with one deliberate exception: a Secret that is still the same
object (same metadata.uid, and not deleted since it was last seen) but whose content became
unusable keeps serving its last good certificate, so a bad edit does not take a site's HTTPS down.
That is history, not state: a fresh replica that only ever saw the invalid content has no
certificate for it. A deleted Secret is forgotten at once: its certificate stops being served.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from controlplane.ingress.secrets import decode_tls_secret
from controlplane.ir import CertificateSecret

log = logging.getLogger("controlplane.certificates")


def _uid(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


class CertificateBook:
    def __init__(self) -> None:
        self._good: dict[str, tuple[str, CertificateSecret]] = {}  # name -> (Secret uid, certificate)

    def __contains__(self, name: object) -> bool:
        return name in self._good

    def __getitem__(self, name: str) -> CertificateSecret:
        return self._good[name][1]

    def update(self, name: str, obj: Mapping[str, Any] | None, *, deleted: bool = False) -> None:
        """Record the Secret `name` now is (None: gone). `deleted`: a delete of it was seen since the
        last update, so even an object of the same name (and no uid, as in file mode) is a new one."""
        if obj is None:
            self._good.pop(name, None)
            return
        uid = _uid(obj)
        try:
            cert, key = decode_tls_secret(obj)
        except ValueError as exc:
            last = self._good.get(name)
            if last is not None and last[0] == uid and not deleted:
                log.warning("secret %s is unusable (%s); keeping its last good certificate", name, exc)
            else:
                self._good.pop(name, None)
            return
        self._good[name] = (uid, CertificateSecret(name, cert, key))
