"""The real ``twilio`` REST client over a small HTTP client of our own, optionally aimed at
another base URL.

The SMS channel talks to something other than ``https://api.twilio.com`` in tests, benches
and staging (``[twilio] api_base_url``, e.g. ``tests/peers/twilio_standin.py``), through the
*real* client all the same: its form encoding, auth, JSON parsing, paging and
``TwilioRestException`` mapping. The SDK's documented extension point for that is its
``http_client`` argument, which takes any implementation of :class:`twilio.http.HttpClient`.
:class:`TwilioHttp` is one, on urllib3's public pool API: it sends each ``*.twilio.com``
request to the base URL instead (keeping path and query), keeps the last response per
thread (``TwilioRestException`` carries no headers, and a 429's ``Retry-After`` matters),
and tells the two kinds of network trouble apart, which the send path must not confuse:

* :class:`Unreached`: the request never left (refused, no route, connect timeout, proxy
  refused): nothing was sent, sending again is safe;
* :class:`Unanswered`: the request went out and its answer was lost (read timeout, reset):
  the provider may have taken the message (docs/delivery.md, "unknown is not failed").

``python -m bench.send_cpu`` measures it against the SDK's stock client (on requests).
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import urllib.request
from datetime import datetime
from urllib.parse import urlencode, urlsplit, urlunsplit

import urllib3
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.rest import Client
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProxyError,
)

from service.core.clock import SYSTEM_CLOCK
from service.core.timeutil import http_date

__all__ = [
    "TwilioHttp",
    "Unanswered",
    "Unreached",
    "close_client",
    "make_client",
    "rebase_url",
    "retry_after_seconds",
]

TWILIO_HOST_SUFFIX = ".twilio.com"
DEFAULT_POOL_SIZE = max(32, (os.cpu_count() or 1) + 4)


class Unreached(Exception):
    """The request never reached the provider: nothing was sent."""


class Unanswered(Exception):
    """The request went out but its answer was lost: the provider may have acted on it."""


def rebase_url(url: str, base_url: str) -> str:
    """Return ``url`` with a ``*.twilio.com`` scheme and host replaced by ``base_url``.

    ``base_url`` may carry a path prefix (``http://127.0.0.1:8080/twilio``); it is
    prepended to the original path. URLs for other hosts, and every URL when ``base_url``
    is empty, are returned unchanged.
    """
    if not base_url:
        return url
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host != "twilio.com" and not host.endswith(TWILIO_HOST_SUFFIX):
        return url
    base = urlsplit(base_url)
    path = base.path.rstrip("/") + parts.path
    return urlunsplit((base.scheme, base.netloc, path, parts.query, parts.fragment))


class TwilioHttp(HttpClient):
    """An implementation of the SDK's ``HttpClient`` interface on a urllib3 pool.

    Thread-safe: the pools are shared, :attr:`last_response` is per thread. Proxies come
    from the environment (``HTTPS_PROXY``, ``NO_PROXY``...), read once per host: a running
    process's environment does not change.
    """

    def __init__(
        self,
        base_url: str = "",
        *,
        timeout: float | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        # No request logging: a Messages list's query holds phone numbers.
        super().__init__(logging.getLogger("hearth.twilio_http"), False, timeout)
        self.base_url = base_url.rstrip("/")
        self._local = threading.local()
        self._pool_size = pool_size
        self._direct = urllib3.PoolManager(maxsize=pool_size, block=False)
        self._proxies: dict[str, urllib3.ProxyManager | None] = {}  # origin -> its proxy
        self._lock = threading.Lock()
        self._auth: tuple[tuple[str, str], str] | None = None

    def request(
        self,
        method: str,
        uri: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        self._local.last_response = None
        url = rebase_url(uri, self.base_url)
        if timeout is None:
            timeout = self.timeout
        response = self._send(method, url, params, data, headers, auth, timeout)
        self._local.last_response = response
        return response

    def _send(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None,
        data: dict[str, object] | None,
        headers: dict[str, str] | None,
        auth: tuple[str, str] | None,
        timeout: float | None,
    ) -> Response:
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params, doseq=True)
        out = dict(headers or {})
        body: bytes | None = None
        if data:
            body = urlencode(data, doseq=True).encode()
            out.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if auth is not None:
            out["Authorization"] = self._basic(auth)
        try:
            raw = self._pool_for(url).request(
                method.upper(),
                url,
                body=body,
                headers=out,
                redirect=False,
                retries=False,
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
            )
        except (NewConnectionError, ConnectTimeoutError, ProxyError) as exc:
            raise Unreached(type(exc).__name__) from exc
        except MaxRetryError as exc:  # a proxy's refusal arrives wrapped so
            raise Unreached(type(exc.reason).__name__) from exc
        except HTTPError as exc:  # read timeout, reset, protocol error: the body went out
            raise Unanswered(type(exc).__name__) from exc
        return Response(raw.status, raw.data.decode("utf-8", "replace"), raw.headers)

    def _basic(self, auth: tuple[str, str]) -> str:
        cached = self._auth
        if cached is None or cached[0] != auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            cached = self._auth = (auth, f"Basic {token}")
        return cached[1]

    def _pool_for(self, url: str) -> urllib3.PoolManager:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        if origin not in self._proxies:
            with self._lock:
                if origin not in self._proxies:
                    self._proxies[origin] = self._proxy_for(parts.scheme, parts.hostname or "")
        return self._proxies[origin] or self._direct

    def _proxy_for(self, scheme: str, host: str) -> urllib3.ProxyManager | None:
        if urllib.request.proxy_bypass(host):
            return None
        proxy = urllib.request.getproxies().get(scheme)
        if not proxy:
            return None
        return urllib3.ProxyManager(proxy, maxsize=self._pool_size, block=False)

    @property
    def last_response(self) -> Response | None:
        """The last response received by the calling thread (``None`` before any)."""
        response: Response | None = getattr(self._local, "last_response", None)
        return response

    def close(self) -> None:
        """Close pooled connections."""
        self._direct.clear()
        for pool in list(self._proxies.values()):
            if pool is not None:
                pool.clear()


def make_client(
    account_sid: str,
    auth_token: str,
    base_url: str = "",
    timeout: float | None = 10.0,
    pool_size: int = DEFAULT_POOL_SIZE,
) -> Client:
    """The real ``twilio.rest.Client``; its requests go to ``base_url`` when one is given.

    ``client.http_client`` is a :class:`TwilioHttp`; call :func:`close_client` when done.
    """
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be > 0, got {timeout!r}")
    http_client = TwilioHttp(base_url, timeout=timeout, pool_size=pool_size)
    return Client(account_sid, auth_token, http_client=http_client)


def close_client(client: Client) -> None:
    """Release the pooled connections of a client made by :func:`make_client`."""
    http_client = client.http_client
    if isinstance(http_client, TwilioHttp):
        http_client.close()


def retry_after_seconds(response: Response | None, *, now: datetime | None = None) -> float | None:
    """Seconds from the ``Retry-After`` header of ``response`` (delta or HTTP date), if any."""
    if response is None or not response.headers:
        return None
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = str(value).strip()
    try:
        seconds = float(value)
    except ValueError:
        when = http_date(value)
        if when is None:
            return None
        seconds = (when - (now or SYSTEM_CLOCK.now())).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)
