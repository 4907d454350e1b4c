"""A client that requests one host in a loop, recording every status: for tests that must see
every answer Envoy gives while its configuration changes underneath."""

from __future__ import annotations

import threading

from tests.support.http import Client


class Hammer:
    """Requests `host` in a loop on a kept-alive connection, recording every status, until stopped
    (0 for a connection error, after which it reconnects)."""

    def __init__(self, port: int, host: str) -> None:
        self.port, self.host = port, host
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"hammer-{host}", daemon=True)

    def _loop(self) -> None:
        with Client(self.port, host=self.host) as c:
            while not self._stop.is_set():
                try:
                    self.statuses.append(c.request("GET", "/").status)
                except OSError:
                    self.statuses.append(0)
                    c.close()

    def served(self, after_first_200: int) -> bool:
        """Whether it got a 200 and then at least `after_first_200` more answers."""
        if 200 not in self.statuses:
            return False
        return len(self.statuses) - self.statuses.index(200) > after_first_200

    def __enter__(self) -> Hammer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
