"""Send the probes to an Envoy and describe each answer by what a client and a backend can see.

An answer is the status (or why there was none: refused, TLS handshake failed), which echo
backend answered and the path and Host it received, the Location, the response headers a gateway
may set (Date, Server, timings and the echo's own identity headers left out), the body of an
answer no backend gave, and for HTTPS the names of the certificate served. A batch (a weighted
canary) is described by how many of its requests each backend answered.

Envoy's own answer when the connection to the backend broke before a response ("upstream connect
error or disconnect/reset before headers") is described as an *upstream reset*, without its status
and reason: which of them Envoy gives depends on timing, not on the configuration. A gRPC backend
(HTTP/2) reached on the HTTP/1-only echo stand-in answers 502 ("protocol error") when Envoy reads the
echo's HTTP/1 refusal first and 503 ("connection termination") when it sees the close first, and a
"retried" in the text depends on how many retries run at once (Envoy's retry circuit breaker).
Compared by their status and reason, the same request was answered alike or not by luck.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import ssl
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509
from yarl import URL

from controlplane.migration.probes import Probe

VOLATILE_HEADERS = frozenset({
    "date", "server", "x-envoy-upstream-service-time", "content-length", "x-request-id", "x-echo-service",
    "x-echo-pod", "transfer-encoding", "connection", "keep-alive",
})  # fmt: skip
CONCURRENCY = 16
RESET = "upstream reset"
# Envoy's local reply when the backend connection failed or broke before response headers (502/503).
UPSTREAM_RESET = re.compile(r"upstream connect error or disconnect/reset before headers\. "
                            r"(?:retried and the latest )?reset reason: ")  # fmt: skip
Z_LIMIT = 4.5  # shares differ beyond 4.5 standard errors: a false alarm is rarer than 1 in 100,000


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no HTTP answer (see `error`), or an upstream reset (`reset`)
    error: str = ""
    backend: str | None = None  # "namespace/service:port" of the echo backend that answered
    upstream_path: str | None = None
    upstream_host: str | None = None
    location: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""  # of an answer no backend gave
    certificate: tuple[str, ...] = ()
    # Envoy answered 502/503 because the backend connection broke (status None, body ""): see the module doc.
    reset: bool = False

    def brief(self) -> str:
        """The answer in a few words: the backend and the path it got, or the status and Location."""
        if self.backend is not None:
            return f"from {self.backend} ({self.upstream_path})"
        status = RESET if self.reset else f"{self.status or self.error}"
        return status + (f" to {self.location}" if self.location else "")

    def first_difference(self, other: Answer) -> str | None:
        """The first field that differs, as 'field: mine vs theirs' (None when equal)."""
        if self.reset != other.reset:
            mine, theirs = (RESET if a.reset else _show(a.status) for a in (self, other))
            return f"status: {mine} vs {theirs}"
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "location":
                mine, theirs = _origin_slash(mine), _origin_slash(theirs)
            if f.name == "headers" and mine != theirs:
                a, b = dict(mine), dict(theirs)
                name = min(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
                return f"response header {name}: {a.get(name, '(none)')!r} vs {b.get(name, '(none)')!r}"
            if mine != theirs:
                return f"{f.name.replace('_', ' ')}: {_show(mine)} vs {_show(theirs)}"
        return None


def unanswered(mine: Answer | Batch, theirs: Answer | Batch) -> bool:
    """Neither side's backend answered: every answer on both sides is an upstream reset."""
    return all(a.reset for side in (mine, theirs) for a in (side.answers() if isinstance(side, Batch) else (side,)))


def _show(value: object) -> str:
    if value is None or value == "" or value == ():
        return "(none)"
    return repr(value) if isinstance(value, str) else str(value)


def _origin_slash(location: str | None) -> str | None:
    """'https://h' and 'https://h/' are one URL (RFC 3986 6.2.3)."""
    if location is None:
        return None
    parts = urlsplit(location)
    return parts._replace(path="/").geturl() if parts.scheme and parts.netloc and not parts.path else location


@dataclass(frozen=True)
class Batch:
    """A weighted probe's answers: how many requests got each distinct answer."""

    counts: tuple[tuple[Answer, int], ...]
    total: int

    def answers(self) -> tuple[Answer, ...]:
        return tuple(a for a, _n in self.counts)

    def first_difference(self, other: Batch) -> str | None:
        mine, theirs = dict(self.counts), dict(other.counts)
        for key in sorted(mine.keys() | theirs.keys(), key=str):
            a, b = mine.get(key, 0), theirs.get(key, 0)
            if shares_differ(a, self.total, b, other.total):
                return f"share of answers {key.brief()}: {a}/{self.total} vs {b}/{other.total}"
        return None


def shares_differ(a: int, n: int, b: int, m: int) -> bool:
    """Two observed shares are further apart than sampling explains (two-proportion z-test)."""
    p = (a + b) / (n + m)
    se = math.sqrt(p * (1 - p) * (1 / n + 1 / m))
    if se == 0:
        return a / n != b / m
    return abs(a / n - b / m) / se > Z_LIMIT


def _certificate_names(der: bytes | None) -> tuple[str, ...]:
    if not der:
        return ()
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(sorted(san.get_values_for_type(x509.DNSName)))


class Client:
    """One Envoy's HTTP and HTTPS ports; a fresh connection pool per replay (listeners may have been
    replaced since the last one)."""

    def __init__(self, http_port: int, https_port: int) -> None:
        self.ports = {"http": http_port, "https": https_port}
        self.tls = ssl.create_default_context()
        self.tls.check_hostname = False
        self.tls.verify_mode = ssl.CERT_NONE  # the certificate is compared by its names, not trusted

    async def replay(self, probes: Sequence[Probe]) -> list[Answer | Batch]:
        limit = asyncio.Semaphore(CONCURRENCY)
        connector = aiohttp.TCPConnector(limit=CONCURRENCY, ssl=self.tls)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                         timeout=timeout, auto_decompress=False) as session:  # fmt: skip

            async def one(probe: Probe) -> Answer:
                async with limit:
                    return await self._send(session, probe)

            async def answer(probe: Probe) -> Answer | Batch:
                if probe.repeat == 1:
                    return await one(probe)
                got = await asyncio.gather(*(one(probe) for _ in range(probe.repeat)))
                counts = Counter(got)
                return Batch(tuple(sorted(counts.items(), key=str)), probe.repeat)

            return list(await asyncio.gather(*(answer(p) for p in probes)))

    async def _send(self, session: aiohttp.ClientSession, probe: Probe) -> Answer:
        url = URL(f"{probe.scheme}://127.0.0.1:{self.ports[probe.scheme]}{probe.path}", encoded=True)
        headers = {"Host": probe.host, **dict(probe.headers)}
        extra = {"server_hostname": probe.host} if probe.scheme == "https" else {}
        error = ""
        for _attempt in range(3):  # a listener being replaced may close a connection: retry
            try:
                async with session.get(url, headers=headers, allow_redirects=False, **extra) as resp:
                    der = None
                    if probe.scheme == "https" and resp.connection is not None and resp.connection.transport:
                        tls = resp.connection.transport.get_extra_info("ssl_object")
                        der = tls.getpeercert(binary_form=True) if tls is not None else None
                    body = await resp.read()
                    return _describe(resp, body, _certificate_names(der))
            except aiohttp.ClientConnectorCertificateError as exc:
                error = f"TLS: {exc.certificate_error}"
            except aiohttp.ClientConnectorError as exc:
                error = "TLS handshake failed" if isinstance(exc.os_error, ssl.SSLError) else "connection refused"
                if not isinstance(exc.os_error, (ssl.SSLError, ConnectionRefusedError)):
                    error = f"cannot connect ({type(exc.os_error).__name__})"
            except (TimeoutError, aiohttp.ClientError) as exc:
                error = type(exc).__name__  # no port or address: the text is compared and documented
        return Answer(None, error=error)


def _describe(resp: aiohttp.ClientResponse, body: bytes, certificate: tuple[str, ...]) -> Answer:
    headers: dict[str, str] = {}
    for name, value in resp.headers.items():
        key = name.lower()
        if key not in VOLATILE_HEADERS and key != "location":
            if key == "set-cookie":  # an affinity cookie's value hashes the backend's address and port
                value = re.sub(r"^([^=;]+)=[^;]*", r"\1=...", value)
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
    location = resp.headers.get("location")
    if "x-echo-service" in resp.headers:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            echo = json.loads(body)
            headers.pop("content-type", None)
            return Answer(resp.status, backend=echo["pod"], upstream_path=echo["path"],
                          upstream_host=echo["host"], location=location, headers=tuple(sorted(headers.items())),
                          certificate=certificate)  # fmt: skip
    text = body[:512].decode("utf-8", "replace")
    if is_upstream_reset(resp.status, text):
        return Answer(None, location=location, headers=tuple(sorted(headers.items())), certificate=certificate,
                      reset=True)  # fmt: skip
    return Answer(resp.status, location=location, headers=tuple(sorted(headers.items())), body=text,
                  certificate=certificate)  # fmt: skip


def is_upstream_reset(status: int, body: str) -> bool:
    """Envoy's own 502/503 for a backend connection that failed or broke before response headers."""
    return status in (502, 503) and UPSTREAM_RESET.match(body) is not None


def compare(mine: Iterable[Answer | Batch], theirs: Iterable[Answer | Batch]) -> list[str | None]:
    return [a.first_difference(b) if type(a) is type(b) else "answer kind" for a, b in zip(mine, theirs, strict=True)]  # type: ignore[arg-type]
