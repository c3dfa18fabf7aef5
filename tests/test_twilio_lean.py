"""The lean transport under the real twilio client: requests without a proxy go straight to
a urllib3 pool, with the same answers, errors and headers as the stock requests path."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from twilio.base.exceptions import TwilioRestException

from service.channels.twilio_http import close_client, make_client, retry_after_seconds
from tests.peers.twilio_standin import TwilioStandIn
from tests.processes import free_port

TO, FROM = "+4915123456789", "+15005550006"


def _refuse(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("went through requests")


@pytest.mark.parametrize("lean", [True, False])
def test_both_paths_send_and_map_errors_alike(
    twilio_standin: TwilioStandIn, monkeypatch: pytest.MonkeyPatch, lean: bool
) -> None:
    args = (twilio_standin.account_sid, twilio_standin.auth_token, twilio_standin.base_url, 5.0)
    client = make_client(*args, lean=lean)
    if lean:
        monkeypatch.setattr(requests.Session, "send", _refuse)  # the lean path never uses it
    try:
        sent = client.messages.create(
            to=TO, from_=FROM, body="Check-in at 21:00", status_callback="https://cb.test/s"
        )
        assert sent.status == "queued" and sent.sid.startswith("SM")
        twilio_standin.fail_next(status=429, code=20429, retry_after=7)
        with pytest.raises(TwilioRestException) as info:
            client.messages.create(to=TO, from_=FROM, body="again")
        assert (info.value.status, info.value.code) == (429, 20429)
        assert retry_after_seconds(client.http_client.last_response) == 7.0
    finally:
        close_client(client)
    [first] = twilio_standin.sent
    assert (first.to, first.body, first.status_callback) == (
        TO,
        "Check-in at 21:00",
        "https://cb.test/s",
    )


def test_lean_path_raises_the_requests_errors_callers_handle(
    twilio_standin: TwilioStandIn,
) -> None:
    sid, token = twilio_standin.account_sid, twilio_standin.auth_token
    nobody = make_client(sid, token, f"http://127.0.0.1:{free_port()}", 5.0)
    twilio_standin.latency = 0.5
    hasty = make_client(sid, token, twilio_standin.base_url, 0.05)
    try:
        with pytest.raises(requests.ConnectionError):
            nobody.messages.create(to=TO, from_=FROM, body="x")
        with pytest.raises(requests.Timeout):
            hasty.messages.create(to=TO, from_=FROM, body="x")
    finally:
        close_client(nobody)
        close_client(hasty)
