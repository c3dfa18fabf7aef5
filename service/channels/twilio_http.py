"""Build the real ``twilio`` REST client, optionally aimed at another base URL.

Why this module exists: the SMS channel must talk to something other than
``https://api.twilio.com`` in tests, benches and staging (``[twilio] api_base_url``, e.g. the
local stand-in in ``tests/peers/twilio_standin.py``), while still going through the *real*
client: its form encoding, auth, JSON parsing and ``TwilioRestException`` mapping.

The twilio package has no base-URL option. Its generated resources build absolute URLs
from per-domain ``base_url`` attributes (``client.api.base_url`` and one per product), and
``Client.get_hostname`` may rewrite the host again for ``TWILIO_REGION``/``TWILIO_EDGE``.
Patching those attributes would miss domains created later and fight the region logic, so
we use the supported extension point instead: a custom ``http_client`` (the client accepts
any :class:`twilio.http.HttpClient`). :class:`RebasedTwilioHttpClient` subclasses the stock
``TwilioHttpClient`` and, just before each request goes out, swaps the scheme and host of any
``*.twilio.com`` URL for the configured base URL, keeping path and query. Every product
domain therefore lands on the one base URL, which is what a single stand-in server wants.

With an empty base URL nothing is rewritten and the client talks to Twilio as usual.

The subclass also keeps the last response *per thread* (the stock client keeps one shared
``_test_only_last_response``), because ``TwilioRestException`` does not carry response
headers and the channel needs ``Retry-After`` from a 429: see :func:`retry_after_seconds`.
"""

from __future__ import annotations

import base64
import os
import threading
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests
import urllib3
from requests import Session
from requests.adapters import HTTPAdapter
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
)

from service.core.clock import SYSTEM_CLOCK
from service.core.timeutil import http_date

__all__ = [
    "EnvironmentOnceSession",
    "RebasedTwilioHttpClient",
    "close_client",
    "make_client",
    "rebase_url",
    "retry_after_seconds",
]

TWILIO_HOST_SUFFIX = ".twilio.com"
DEFAULT_POOL_SIZE = max(32, (os.cpu_count() or 1) + 4)


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


class EnvironmentOnceSession(Session):
    """A ``requests.Session`` that reads the proxy and CA-bundle variables once per host.

    requests reads them on every request: two scans of the whole environment for proxies,
    and a CA-bundle path (``REQUESTS_CA_BUNDLE``) that is then stat()ed. With many send
    threads each stat is a release of the GIL that waits its turn to come back
    (docs/performance.md). A running process's environment does not change, so the answer
    for a host does not either. Calls that pass settings of their own are not cached.
    """

    def __init__(self) -> None:
        super().__init__()
        self._by_origin: dict[tuple[str, str], dict[str, Any]] = {}

    def merge_environment_settings(
        self, url: str, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        if proxies or (stream, verify, cert) != (None, None, None):
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        origin = (parts.scheme.lower(), parts.netloc.lower())
        settings = self._by_origin.get(origin)
        if settings is None:
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            tls_proxy = any(
                str(p).lower().startswith("https:") for p in settings["proxies"].values()
            )
            if origin[0] == "http" and not tls_proxy:
                settings["verify"] = True  # plain http: no certificate to check, no stat
            self._by_origin[origin] = settings  # a race computes it twice, harmlessly
        return {**settings, "proxies": dict(settings["proxies"])}


class RebasedTwilioHttpClient(TwilioHttpClient):
    """``TwilioHttpClient`` that sends ``*.twilio.com`` requests to ``base_url`` instead.

    Safe to share between threads (as the stock client is): the underlying
    ``requests.Session`` is pooled, and :attr:`last_response` is thread-local.
    """

    def __init__(
        self,
        base_url: str = "",
        *,
        timeout: float | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        lean: bool = True,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        super().__init__(pool_connections=False, timeout=timeout)  # our session, below
        session = EnvironmentOnceSession()
        self.session = session
        self._env: EnvironmentOnceSession = session
        self.base_url = base_url.rstrip("/")
        self._local = threading.local()
        self._pool_size = pool_size
        self._lean_ok = lean  # False: always the stock requests path (benchmarks compare)
        self._pools: dict[str, urllib3.PoolManager] = {}
        self._pools_lock = threading.Lock()
        self._auth_header: tuple[tuple[str, str], str] | None = None
        # The stock client mounts a sized pool for https:// only; a rebased client may
        # speak plain http:// to a local peer, and many worker threads share this session.
        for prefix in ("https://", "http://"):
            session.mount(prefix, HTTPAdapter(pool_maxsize=pool_size))

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        self._local.last_response = None
        url = rebase_url(url, self.base_url)
        if timeout is None:
            timeout = self.timeout
        elif timeout <= 0:
            raise ValueError(timeout)
        settings = self._env.merge_environment_settings(url, {}, None, None, None)
        lean = (
            self._lean_ok
            and not settings["proxies"]
            and not allow_redirects
            and not (headers and "json" in headers.get("Content-Type", ""))
        )
        if lean:
            response = self._lean(method, url, params, data, headers, auth, timeout, settings)
        else:  # through a proxy, or a JSON API: the stock path
            response = super().request(
                method,
                url,
                params=params,
                data=data,
                headers=headers,
                auth=auth,
                timeout=timeout,
                allow_redirects=allow_redirects,
            )
        self._local.last_response = response
        return response

    def _lean(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None,
        data: dict[str, object] | None,
        headers: dict[str, str] | None,
        auth: tuple[str, str] | None,
        timeout: float | None,
        settings: dict[str, Any],
    ) -> Response:
        """The request straight on urllib3's pool: what requests would send (form body,
        basic auth, its errors), without its per-request preparation, hooks and merging of
        settings, which cost more CPU than the HTTP exchange itself (docs/performance.md)."""
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params, doseq=True)
        out = dict(headers or {})
        body: bytes | None = None
        if data:
            body = urlencode(data, doseq=True).encode()
            out.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if auth is not None:
            out["Authorization"] = self._basic(auth)
        if self.logger.isEnabledFor(20):  # INFO: the stock client's request log
            self.log_request(
                {"method": method, "url": url, "params": params, "headers": out, "auth": auth}
            )
        try:
            raw = self._pool(settings).request(
                method.upper(),
                url,
                body=body,
                headers=out,
                redirect=False,
                retries=False,
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
            )
        except NewConnectionError as exc:  # refused, no such host (a ConnectTimeoutError too)
            raise requests.exceptions.ConnectionError(exc) from exc
        except ConnectTimeoutError as exc:
            raise requests.exceptions.ConnectTimeout(exc) from exc
        except ReadTimeoutError as exc:
            raise requests.exceptions.ReadTimeout(exc) from exc
        except HTTPError as exc:  # reset, protocol errors: as requests raises them
            raise requests.exceptions.ConnectionError(exc) from exc
        response = Response(raw.status, raw.data.decode("utf-8", "replace"), raw.headers)
        if self.logger.isEnabledFor(20):
            self.log_response(raw.status, response)
        return response

    def _basic(self, auth: tuple[str, str]) -> str:
        cached = self._auth_header
        if cached is None or cached[0] != auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            cached = self._auth_header = (auth, f"Basic {token}")
        return cached[1]

    def _pool(self, settings: dict[str, Any]) -> urllib3.PoolManager:
        verify = settings.get("verify", True)
        key = str(verify)
        pool = self._pools.get(key)
        if pool is None:
            with self._pools_lock:
                pool = self._pools.get(key)
                if pool is None:
                    tls: dict[str, Any] = (
                        {"cert_reqs": "CERT_NONE"}
                        if verify is False
                        else {
                            "cert_reqs": "CERT_REQUIRED",
                            "ca_certs": verify if isinstance(verify, str) else _ca_bundle(),
                        }
                    )
                    pool = urllib3.PoolManager(maxsize=self._pool_size, block=False, **tls)
                    self._pools[key] = pool
        return pool

    @property
    def last_response(self) -> Response | None:
        """The last response received by the calling thread (``None`` before any)."""
        response: Response | None = getattr(self._local, "last_response", None)
        return response

    def close(self) -> None:
        """Close pooled connections."""
        if self.session is not None:
            self.session.close()
        for pool in list(self._pools.values()):
            pool.clear()


def _ca_bundle() -> str:
    """The CA bundle requests would use (certifi's), for the lean path's TLS checks."""
    return requests.certs.where()


def make_client(
    account_sid: str,
    auth_token: str,
    base_url: str = "",
    timeout: float | None = 10.0,
    pool_size: int = DEFAULT_POOL_SIZE,
    lean: bool = True,
) -> Client:
    """The real ``twilio.rest.Client``; its requests go to ``base_url`` when one is given.

    ``client.http_client`` is a :class:`RebasedTwilioHttpClient`; call :func:`close_client`
    when done with the client.
    """
    http_client = RebasedTwilioHttpClient(base_url, timeout=timeout, pool_size=pool_size, lean=lean)
    return Client(account_sid, auth_token, http_client=http_client)


def close_client(client: Client) -> None:
    """Release the pooled connections of a client made by :func:`make_client`."""
    http_client = client.http_client
    if isinstance(http_client, RebasedTwilioHttpClient):
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
