"""Hearth's HTTP client under the real twilio client (the SDK's public ``HttpClient``
interface): the SDK's answers, errors and headers on its urllib3 path, the two kinds of
network trouble told apart, and the Messages list and fetch read through
the SDK's own paging against the stand-in."""

from __future__ import annotations

import pytest
from twilio.base.exceptions import TwilioRestException

from service.channels.twilio_http import (
    TwilioHttp,
    Unanswered,
    Unreached,
    close_client,
    make_client,
    retry_after_seconds,
)
from tests.peers.twilio_standin import TwilioStandIn
from tests.processes import free_port, wait_for

TO, FROM = "+4915123456789", "+15005550006"


def test_the_real_client_sends_and_maps_errors(twilio_standin: TwilioStandIn) -> None:
    args = (twilio_standin.account_sid, twilio_standin.auth_token, twilio_standin.base_url, 5.0)
    client = make_client(*args)
    try:
        sent = client.messages.create(
            to=TO, from_=FROM, body="Check-in at 21:00", status_callback="https://cb.test/s"
        )
        assert sent.status == "queued" and sent.sid.startswith("SM")
        twilio_standin.fail_next(status=429, code=20429, retry_after=7)
        with pytest.raises(TwilioRestException) as info:
            client.messages.create(to=TO, from_=FROM, body="again")
        assert (info.value.status, info.value.code) == (429, 20429)
        http = client.http_client
        assert isinstance(http, TwilioHttp)
        assert retry_after_seconds(http.last_response) == 7.0
    finally:
        close_client(client)
    [first] = twilio_standin.accepted()
    assert (first.to, first.body) == (TO, "Check-in at 21:00")
    assert twilio_standin.sent[0].status_callback == "https://cb.test/s"


def test_a_request_that_never_left_and_one_whose_answer_was_lost_differ(
    twilio_standin: TwilioStandIn,
) -> None:
    """Nobody listening: nothing was sent (:class:`Unreached`). The provider slower than the
    timeout, or the connection dropped after the request: it may have the message
    (:class:`Unanswered`), and here it does."""
    sid, token = twilio_standin.account_sid, twilio_standin.auth_token
    nobody = make_client(sid, token, f"http://127.0.0.1:{free_port()}", 5.0)
    hasty = make_client(sid, token, twilio_standin.base_url, 0.05)
    try:
        with pytest.raises(Unreached):
            nobody.messages.create(to=TO, from_=FROM, body="x")
        twilio_standin.latency = 0.5
        with pytest.raises(Unanswered):
            hasty.messages.create(to=TO, from_=FROM, body="slow")
        twilio_standin.latency = 0.0
        twilio_standin.accept_then_drop(1)
        with pytest.raises(Unanswered):
            hasty.messages.create(to=TO, from_=FROM, body="dropped")
    finally:
        close_client(nobody)
        close_client(hasty)
    wait_for(lambda: twilio_standin.in_progress == 0, 10, "the slow answer")
    assert sorted(a.body for a in twilio_standin.accepted(TO)) == ["dropped", "slow"]


def test_the_messages_list_filters_by_to_and_date_sent_and_pages_as_twilio_does(
    twilio_standin: TwilioStandIn,
) -> None:
    client = make_client(
        twilio_standin.account_sid, twilio_standin.auth_token, twilio_standin.base_url, 5.0
    )
    try:
        for i in range(7):
            client.messages.create(to=TO, from_=FROM, body=f"m{i}")
        client.messages.create(to="+15550001111", from_=FROM, body="other")
        [first, *_] = twilio_standin.accepted(TO)
        listed = client.messages.list(to=TO, date_sent_after=first.at, page_size=3)
        fetched = client.messages(first.sid).fetch()
        none_later = client.messages.list(to=TO, date_sent_after=first.at.replace(year=2100))
    finally:
        close_client(client)
    assert [m.body for m in listed] == [f"m{i}" for i in reversed(range(7))]  # newest first
    assert (fetched.body, fetched.to, fetched.date_sent is not None) == ("m0", TO, True)
    assert none_later == []
    pages = [lk for lk in twilio_standin.lookups if lk.kind == "list"]
    assert len(pages) == 4  # 3 + 3 + 1 through next_page_uri, then the empty query
    assert pages[0].query["To"] == TO and "DateSent>" in pages[0].query
