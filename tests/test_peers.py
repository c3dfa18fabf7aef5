"""The local peers behave like the real services, as seen through the real clients."""

from __future__ import annotations

import re
import smtplib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from service.channels.twilio_http import (
    TwilioHttp,
    Unanswered,
    Unreached,
    close_client,
    make_client,
    rebase_url,
    retry_after_seconds,
)
from tests.peers.smtp_sink import SmtpSink
from tests.peers.twilio_standin import TwilioStandIn, num_segments

SID = re.compile(r"^SM[0-9a-f]{32}$")
TO = "+15005550006"
FROM = "+15005550001"


@pytest.fixture
def client(twilio_standin: TwilioStandIn) -> Iterator[Client]:
    c = make_client(
        twilio_standin.account_sid, twilio_standin.auth_token, twilio_standin.base_url, 5.0
    )
    yield c
    close_client(c)


def _last_response(c: Client) -> Any:
    http_client = c.http_client
    assert isinstance(http_client, TwilioHttp)
    return http_client.last_response


# -- make_client / rebase_url ------------------------------------------------------------


def test_rebase_url_rewrites_twilio_hosts_only() -> None:
    base = "http://127.0.0.1:9999"
    url = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json"
    assert rebase_url(url, base) == "http://127.0.0.1:9999/2010-04-01/Accounts/AC1/Messages.json"
    assert rebase_url("https://api.dublin.ie1.twilio.com/x?a=1", base + "/tw/") == (
        "http://127.0.0.1:9999/tw/x?a=1"
    )
    assert rebase_url("https://example.com/x", base) == "https://example.com/x"
    assert rebase_url(url, "") == url


def test_concurrent_sends_keep_their_connections(twilio_standin: TwilioStandIn) -> None:
    """Sixty threads sending at once, twice: the pool holds all sixty connections, so the second
    round opens none (a pool smaller than the concurrency would reconnect for each send)."""
    threads = 60
    c = make_client(
        twilio_standin.account_sid,
        twilio_standin.auth_token,
        twilio_standin.base_url,
        5.0,
        pool_size=threads,
    )
    twilio_standin.latency = 0.2  # long enough that all sixty overlap

    def send(i: int) -> None:
        c.messages.create(to=f"+1415555{i:04d}", from_="+15005550006", body="hi")

    try:
        with ThreadPoolExecutor(threads) as pool:
            for _ in range(2):
                list(pool.map(send, range(threads)))
    finally:
        close_client(c)
    assert len(twilio_standin.sent) == 2 * threads
    assert twilio_standin.connections_accepted <= threads


def test_make_client_without_base_url_keeps_twilio_default() -> None:
    c = make_client("AC" + "1" * 32, "token", "", timeout=3.0)
    try:
        assert isinstance(c.http_client, TwilioHttp)
        assert c.http_client.timeout == 3.0
        assert c.api.base_url == "https://api.twilio.com"
        assert rebase_url(c.api.base_url + "/x", c.http_client.base_url).startswith(
            "https://api.twilio.com/"
        )
    finally:
        close_client(c)


def test_proxy_variables_apply_as_read_on_the_first_request_to_a_host(
    twilio_standin: TwilioStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY and NO_PROXY are honoured, read once per host rather than on every request
    (requests would scan the environment twice per send)."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # the discard port: nothing there
    args = (twilio_standin.account_sid, twilio_standin.auth_token, twilio_standin.base_url, 5.0)
    proxied, direct = make_client(*args), make_client(*args)
    try:
        with pytest.raises(Unreached):
            proxied.messages.create(to=TO, from_=FROM, body="through the proxy")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert direct.messages.create(to=TO, from_=FROM, body="direct").status == "queued"
        # What a client has read stays, as the environment of a running process does.
        with pytest.raises(Unreached):
            proxied.messages.create(to=TO, from_=FROM, body="through the proxy again")
    finally:
        close_client(proxied)
        close_client(direct)
    assert [r.body for r in twilio_standin.sent] == ["direct"]


# -- Twilio stand-in ------------------------------------------------------------------------


def test_real_client_sends_through_standin(twilio_standin: TwilioStandIn, client: Client) -> None:
    message = client.messages.create(
        to=TO, from_=FROM, body="Date night in 30 minutes", status_callback="http://cb.test/s"
    )
    assert SID.match(message.sid)
    assert message.status == "queued"
    assert message.to == TO
    assert message.from_ == FROM
    assert message.body == "Date night in 30 minutes"
    assert message.account_sid == twilio_standin.account_sid
    assert message.num_segments == "1"
    assert message.date_created is not None and message.date_created.tzinfo is not None

    [record] = twilio_standin.sent
    assert (record.to, record.from_, record.body) == (TO, FROM, "Date night in 30 minutes")
    assert record.status_callback == "http://cb.test/s"
    assert record.messaging_service_sid is None
    assert record.sid == message.sid
    assert record.received_at <= time.monotonic()
    assert twilio_standin.requests == [record]


def test_messaging_service_sid_instead_of_from(
    twilio_standin: TwilioStandIn,
    client: Client,
) -> None:
    mg = "MG" + "a" * 32
    message = client.messages.create(to=TO, messaging_service_sid=mg, body="hi")
    assert message.messaging_service_sid == mg
    assert twilio_standin.sent[0].messaging_service_sid == mg
    assert twilio_standin.sent[0].from_ is None


@pytest.mark.parametrize("code", [21211, 21610])
def test_injected_4xx_raises_twilio_rest_exception(
    twilio_standin: TwilioStandIn,
    client: Client,
    code: int,
) -> None:
    twilio_standin.fail_next(1, status=400, code=code)
    with pytest.raises(TwilioRestException) as info:
        client.messages.create(to=TO, from_=FROM, body="x")
    assert info.value.code == code
    assert info.value.status == 400
    # The queue is drained: the next send succeeds.
    assert SID.match(client.messages.create(to=TO, from_=FROM, body="y").sid)
    assert [r.http_status for r in twilio_standin.requests] == [400, 201]
    assert twilio_standin.requests[0].error_code == code


def test_fail_to_number_fails_every_send_to_it(
    twilio_standin: TwilioStandIn,
    client: Client,
) -> None:
    twilio_standin.fail_to("+15005550009", 400, 21610)
    for _ in range(2):
        with pytest.raises(TwilioRestException) as info:
            client.messages.create(to="+15005550009", from_=FROM, body="x")
        assert (info.value.status, info.value.code) == (400, 21610)
    client.messages.create(to=TO, from_=FROM, body="ok")
    twilio_standin.clear_fail_to("+15005550009")
    client.messages.create(to="+15005550009", from_=FROM, body="ok again")
    assert [r.to for r in twilio_standin.sent] == [TO, "+15005550009"]


def test_429_carries_retry_after(twilio_standin: TwilioStandIn, client: Client) -> None:
    twilio_standin.fail_next(1, status=429, retry_after=2)
    with pytest.raises(TwilioRestException) as info:
        client.messages.create(to=TO, from_=FROM, body="x")
    assert (info.value.status, info.value.code) == (429, 20429)
    assert retry_after_seconds(_last_response(client)) == 2.0

    # And on the wire, as any HTTP client sees it.
    twilio_standin.fail_next(1, status=429, code=20429, retry_after=1.5)
    response = httpx.post(
        twilio_standin.messages_url,
        data={"To": TO, "From": FROM, "Body": "x"},
        auth=(twilio_standin.account_sid, twilio_standin.auth_token),
    )
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1.5"
    assert response.json() == {
        "code": 20429,
        "message": "Too Many Requests",
        "more_info": "https://www.twilio.com/docs/errors/20429",
        "status": 429,
    }


def test_failures_are_returned_in_order(twilio_standin: TwilioStandIn, client: Client) -> None:
    twilio_standin.fail_next(1, status=500)
    twilio_standin.fail_next(1, status=503, code=20503)
    statuses = []
    for _ in range(3):
        try:
            client.messages.create(to=TO, from_=FROM, body="x")
            statuses.append(201)
        except TwilioRestException as exc:
            statuses.append(exc.status)
    assert statuses == [500, 503, 201]
    assert twilio_standin.pending_faults == 0
    assert retry_after_seconds(_last_response(client)) is None


def test_wrong_credentials_get_401(twilio_standin: TwilioStandIn) -> None:
    bad = make_client(twilio_standin.account_sid, "wrong-token", twilio_standin.base_url, 5.0)
    try:
        twilio_standin.fail_next(1, status=500)  # auth is checked before injected faults
        with pytest.raises(TwilioRestException) as info:
            bad.messages.create(to=TO, from_=FROM, body="x")
    finally:
        close_client(bad)
    assert (info.value.status, info.value.code) == (401, 20003)
    assert twilio_standin.sent == []
    assert twilio_standin.requests[0].http_status == 401
    assert twilio_standin.pending_faults == 1


def test_validation_errors_match_twilio(client: Client) -> None:
    with pytest.raises(TwilioRestException) as info:
        client.messages.create(to="555-0100", from_=FROM, body="x")
    assert (info.value.status, info.value.code) == (400, 21211)
    with pytest.raises(TwilioRestException) as info:
        client.messages.create(to=TO, body="x")
    assert info.value.code == 21603
    with pytest.raises(TwilioRestException) as info:
        client.messages.create(to=TO, from_=FROM, body="")
    assert info.value.code == 21602


def test_latency_and_client_timeout(twilio_standin: TwilioStandIn) -> None:
    twilio_standin.latency = 0.3
    slow = make_client(
        twilio_standin.account_sid, twilio_standin.auth_token, twilio_standin.base_url, 5.0
    )
    hasty = make_client(
        twilio_standin.account_sid, twilio_standin.auth_token, twilio_standin.base_url, 0.05
    )
    try:
        start = time.monotonic()
        slow.messages.create(to=TO, from_=FROM, body="x")
        assert time.monotonic() - start >= 0.3
        with pytest.raises(Unanswered):
            hasty.messages.create(to=TO, from_=FROM, body="x")
    finally:
        close_client(slow)
        close_client(hasty)


def test_concurrent_clients(twilio_standin: TwilioStandIn, client: Client) -> None:
    twilio_standin.latency = 0.05
    n = 60
    with ThreadPoolExecutor(max_workers=n) as pool:
        sids = list(
            pool.map(
                lambda i: client.messages.create(to=TO, from_=FROM, body=f"m{i}").sid, range(n)
            )
        )
    assert len(set(sids)) == n
    assert sorted(r.body or "" for r in twilio_standin.sent) == sorted(f"m{i}" for i in range(n))


def test_num_segments() -> None:
    assert num_segments("a" * 160) == 1
    assert num_segments("a" * 161) == 2
    assert num_segments("€" * 80) == 1  # extension chars count double
    assert num_segments("💛" * 35) == 1
    assert num_segments("💛" * 36) == 2


def test_signed_status_callback(twilio_standin: TwilioStandIn, client: Client) -> None:
    received: list[tuple[str, dict[str, str]]] = []

    class Callback(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            form = dict(parse_qsl(self.rfile.read(length).decode()))
            received.append((self.headers["X-Twilio-Signature"], form))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Callback)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/twilio/status"
        sid = client.messages.create(to=TO, from_=FROM, body="x", status_callback=url).sid
        assert twilio_standin.send_status_callback(sid, "delivered") == 204
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    [(signature, form)] = received
    assert form["MessageSid"] == sid and form["MessageStatus"] == "delivered"
    assert RequestValidator(twilio_standin.auth_token).validate(url, form, signature)


# -- SMTP sink --------------------------------------------------------------------------------


def _mail(to: str = "ana@example.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Hearth <hearth@example.com>"
    msg["To"] = to
    msg["Subject"] = "Sunday walk ☀"
    msg.set_content("See you at 10.")
    msg.add_alternative("<p>See you at 10.</p>", subtype="html")
    return msg


def test_smtplib_delivers_to_sink(smtp_sink: SmtpSink) -> None:
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=5) as smtp:
        smtp.send_message(_mail())
    [mail] = smtp_sink.messages
    assert mail.mail_from == "hearth@example.com"
    assert mail.rcpt_tos == ["ana@example.com"]
    assert mail.subject == "Sunday walk ☀"
    assert mail.text().strip() == "See you at 10."
    assert mail.html() is not None and "<p>" in (mail.html() or "")
    assert mail.login is None


def test_sink_rejects_data(smtp_sink: SmtpSink) -> None:
    smtp_sink.reject_next(1, code=550, text="5.7.1 Spam")
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=5) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as info:
            smtp.send_message(_mail())
        assert info.value.smtp_code == 550
        assert b"Spam" in info.value.smtp_error
        smtp.send_message(_mail())  # only the next one was rejected
    assert len(smtp_sink.messages) == 1


def test_sink_rejects_recipient(smtp_sink: SmtpSink) -> None:
    smtp_sink.reject_next(1, code=451, stage="rcpt")
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=5) as smtp:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            smtp.send_message(_mail())
        assert info.value.recipients["ana@example.com"][0] == 451
        smtp_sink.reject_to("bo@example.com")
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            smtp.send_message(_mail("bo@example.com"))
        assert info.value.recipients["bo@example.com"][0] == 550
    assert smtp_sink.messages == []


def test_sink_auth() -> None:
    with SmtpSink("hearth", "s3cret") as sink:
        with smtplib.SMTP(sink.host, sink.port, timeout=5) as smtp:
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                smtp.send_message(_mail())
            assert refused.value.smtp_code == 530
            with pytest.raises(smtplib.SMTPAuthenticationError):
                smtp.login("hearth", "wrong")
        with smtplib.SMTP(sink.host, sink.port, timeout=5) as smtp:
            smtp.login("hearth", "s3cret")
            smtp.send_message(_mail())
        assert sink.wait_for(1)[0].login == "hearth"
