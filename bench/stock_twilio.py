"""The twilio SDK's stock HTTP client (``TwilioHttpClient``, on requests), aimed at a
stand-in: the baseline the benchmarks measure Hearth's own ``TwilioHttp`` against."""

from __future__ import annotations

import logging

from requests.adapters import HTTPAdapter
from twilio.http import HttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from service.channels.twilio_http import rebase_url


class StockHttp(HttpClient):
    """The SDK's own client, through its public ``HttpClient`` interface, with each
    ``*.twilio.com`` URL rebased onto the stand-in."""

    def __init__(self, base_url: str, timeout: float, pool_size: int) -> None:
        super().__init__(logging.getLogger("bench.stock"), False, timeout)
        self.base_url = base_url
        self.stock = TwilioHttpClient(timeout=timeout)
        if self.stock.session is not None:  # as many pooled connections as threads
            for prefix in ("https://", "http://"):
                self.stock.session.mount(prefix, HTTPAdapter(pool_maxsize=pool_size))

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
        url = rebase_url(uri, self.base_url)
        return self.stock.request(
            method, url, params, data, headers, auth, timeout, allow_redirects
        )

    def close(self) -> None:
        if self.stock.session is not None:
            self.stock.session.close()


def stock_client(
    account_sid: str, auth_token: str, base_url: str, timeout: float, pool_size: int = 10
) -> Client:
    """The real ``twilio.rest.Client`` on the SDK's stock HTTP client."""
    return Client(account_sid, auth_token, http_client=StockHttp(base_url, timeout, pool_size))


def close_stock(client: Client) -> None:
    if isinstance(client.http_client, StockHttp):
        client.http_client.close()
