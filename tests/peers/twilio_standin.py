"""A local stand-in for Twilio's Programmable Messaging API (``Messages.json``).

A real HTTP server (stdlib ``ThreadingHTTPServer``) on 127.0.0.1 with an ephemeral port,
served from a daemon thread. Point the real client at it with
``service.channels.twilio_http.make_client(sid, token, standin.base_url)``.

It implements ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` closely enough for
``twilio.rest.Client.messages.create`` to parse: HTTP Basic auth (401/20003 when wrong),
the 2010 API's validation errors (21602 no Body, 21603 no From, 21604 no To, 21211 To not
E.164), and a 201 Message resource with status ``queued``. Everything else is a Twilio-style
404 (20404).

Fault injection is thread-safe and can change while clients are sending:

* ``latency``: seconds slept in the handler thread before every response (requests in that
  wait are counted in :attr:`TwilioStandIn.in_progress`);
* ``fail_next(n, status, code, retry_after)``: the next ``n`` authenticated message requests
  fail, in order, with Twilio's error JSON (and ``Retry-After`` when given);
* ``fail_to(number, status, code)``: every send to ``number`` fails until cleared;
* ``storm(seconds, status, retry_after)``: every request fails for a while (a 429 storm);
* ``accept_then(n, "drop" | "timeout", seconds)``: the next ``n`` messages are created (and
  counted as accepted), then the connection drops without an answer, or the answer waits
  ``seconds`` (longer than the client's timeout): the provider took a text the sender
  cannot know about.

Every message request is recorded in :attr:`TwilioStandIn.requests`, successful ones in
:attr:`TwilioStandIn.sent`; :meth:`TwilioStandIn.accepted` is the oracle the send-path tests
count on: every message the provider took (per recipient, body, time, SID).

The API's read side is there too, as Twilio serves it, for settling a send whose answer was
lost: ``GET .../Messages.json`` lists messages newest first, filtered by ``To``, ``From`` and
``DateSent`` (``DateSent``, ``DateSent<``, ``DateSent>``: a date or a UTC timestamp) with
``PageSize`` and ``next_page_uri`` paging; ``GET .../Messages/{Sid}.json`` fetches one. Each
read is recorded in :attr:`TwilioStandIn.lookups`. ``accept_then_drop(n)`` makes the next
``n`` messages be created and their answer lost (the connection closed instead).
:meth:`TwilioStandIn.send_status_callback` POSTs a signed status callback to the
``StatusCallback`` URL a message was created with.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import secrets
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self

from twilio.request_validator import RequestValidator

DEFAULT_ACCOUNT_SID = "AC" + "0" * 31 + "1"
DEFAULT_AUTH_TOKEN = "standin-auth-token"
API_VERSION = "2010-04-01"

_MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json$")
_MESSAGE_PATH = re.compile(
    r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages/(?P<sid>SM[0-9a-f]{32})\.json$"
)
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")

# Default messages for the codes tests usually inject (text as Twilio words it, roughly).
ERROR_MESSAGES: dict[int, str] = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    20503: "Service is unavailable. Please try again",
    21211: "Invalid 'To' Phone Number",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the "
    "'To' number",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
    30003: "Unreachable destination handset",
}

_DEFAULT_CODE_FOR_STATUS: dict[int, int] = {
    400: 21211,
    401: 20003,
    404: 20404,
    429: 20429,
    500: 20500,
    503: 20503,
}

# GSM 03.38 basic character set and the extension table (2 septets each).
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = set("^{}\\[~]|€\f")


def num_segments(body: str) -> int:
    """Segments Twilio would bill for ``body`` (GSM-7: 160/153 septets, UCS-2: 70/67 units)."""
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENDED for ch in body):
        length = sum(2 if ch in _GSM_EXTENDED else 1 for ch in body)
        single, multi = 160, 153
    else:
        length = len(body.encode("utf-16-le")) // 2
        single, multi = 70, 67
    if length <= single:
        return 1
    return -(-length // multi)


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def error_body(status: int, code: int, message: str | None = None) -> dict[str, Any]:
    """Twilio's legacy error JSON, which ``twilio`` maps to ``TwilioRestException``."""
    return {
        "code": code,
        "message": message or ERROR_MESSAGES.get(code, HTTPStatus(status).phrase),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


@dataclass(frozen=True)
class Fault:
    """One injected failure."""

    status: int = 500
    code: int | None = None  # defaults from status: 429→20429, 500→20500, 400→21211...
    retry_after: float | None = None  # seconds, sent as the Retry-After header
    message: str | None = None

    @property
    def error_code(self) -> int:
        if self.code is not None:
            return self.code
        return _DEFAULT_CODE_FOR_STATUS.get(self.status, 20000 + self.status)


@dataclass(frozen=True)
class RecordedRequest:
    """One ``POST .../Messages.json`` as received, with the outcome."""

    to: str | None
    from_: str | None
    body: str | None
    messaging_service_sid: str | None
    status_callback: str | None
    sid: str | None  # the Message SID when created, else None
    received_at: float  # time.monotonic() when the request line arrived
    account_sid: str = ""  # from the URL path
    http_status: int = 201
    error_code: int | None = None
    params: dict[str, str] = field(default_factory=dict)  # every form field

    @property
    def ok(self) -> bool:
        return self.sid is not None


@dataclass(frozen=True)
class Accepted:
    """One message the stand-in accepted (created): what a recipient's phone would get."""

    to: str
    body: str
    sid: str
    at: datetime  # the stand-in's clock when it created the message (its DateSent)


@dataclass(frozen=True)
class Lookup:
    """One read of the Messages API: ``list`` (with its query) or ``fetch`` (with the SID)."""

    kind: str
    query: dict[str, str]


def _when(value: str) -> tuple[datetime, bool]:
    """A DateSent filter value: a UTC timestamp, or a date (True: compare by day)."""
    if "T" in value:
        return datetime.fromisoformat(value.replace("Z", "+00:00")), False
    return datetime.fromisoformat(value).replace(tzinfo=UTC), True


def _date_filter(key: str, value: str) -> Callable[[datetime], bool]:
    bound, by_day = _when(value)
    if by_day:
        day = bound.date()
        ops = {"DateSent": day.__eq__, "DateSent<": day.__ge__, "DateSent>": day.__le__}
        test = ops[key]
        return lambda at: bool(test(at.date()))
    if key == "DateSent<":
        return lambda at: at <= bound
    if key == "DateSent>":
        return lambda at: at >= bound
    return lambda at: at == bound


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    allow_reuse_address = True

    def __init__(self, standin: TwilioStandIn) -> None:
        self.standin = standin
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self.accepted = 0  # TCP connections accepted so far (keep-alive reuse shows here)
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
            self.accepted += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handler threads idling on keep-alive connections so they exit."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout, reset) is routine in fault tests; stay quiet.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    # Headers and body leave in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms a response), a stall the real API does not have.
    disable_nagle_algorithm = True
    server_version = "TwilioStandIn/1.0"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr."""

    def do_POST(self) -> None:
        self.server.standin._handle_post(self)

    def do_GET(self) -> None:
        self.server.standin._handle_other(self)

    do_PUT = do_DELETE = do_PATCH = do_GET

    def read_body(self) -> bytes | None:
        """The body, or None when the client went away before sending all of it (a killed
        sender): like the real API, such a request is dropped, never half-processed."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if len(body) < length:
            self.close_connection = True
            return None
        return body

    def send_json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Twilio-Request-Id", _new_sid("RQ"))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class TwilioStandIn:
    """The Twilio Messages API on ``127.0.0.1:<ephemeral>``; see the module docstring."""

    default_status: ClassVar[str] = "queued"

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        *,
        latency: float = 0.0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._lock = threading.Lock()
        self._latency = float(latency)
        self._faults: deque[Fault] = deque()
        self._storm: tuple[float, Fault] | None = None  # (until, fault): every request fails
        self._fail_to: dict[str, Fault] = {}
        self._after_accept: deque[tuple[str, float]] = deque()
        self._requests: list[RecordedRequest] = []
        self._accepted: dict[str, tuple[Accepted, dict[str, Any]]] = {}  # sid -> (it, resource)
        self._lookups: list[Lookup] = []
        # The stand-in's "now" for DateSent (a test aims it at its FakeClock).
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._in_progress = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("TwilioStandIn already started")
        server = _Server(self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"twilio-standin-{server.server_address[1]}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("TwilioStandIn is not running")
        return int(self._server.server_address[1])

    @property
    def connections_accepted(self) -> int:
        """TCP connections accepted since start: a client that keeps its connections alive
        opens each one once."""
        if self._server is None:
            raise RuntimeError("TwilioStandIn is not running")
        with self._server._connections_lock:
            return self._server.accepted

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def messages_url(self) -> str:
        return f"{self.base_url}/{API_VERSION}/Accounts/{self.account_sid}/Messages.json"

    # -- fault injection ---------------------------------------------------------------

    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        with self._lock:
            self._latency = float(seconds)

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        code: int | None = None,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> None:
        """Queue ``n`` failures for the next authenticated message requests, in order."""
        fault = Fault(status=status, code=code, retry_after=retry_after, message=message)
        with self._lock:
            self._faults.extend([fault] * n)

    def fail_to(
        self,
        number: str,
        status: int = 400,
        code: int | None = 21211,
        message: str | None = None,
    ) -> None:
        """Make every send to ``number`` fail (e.g. 400/21211 invalid, 400/21610 opted out)."""
        with self._lock:
            self._fail_to[number] = Fault(status=status, code=code, message=message)

    def clear_fail_to(self, number: str | None = None) -> None:
        with self._lock:
            if number is None:
                self._fail_to.clear()
            else:
                self._fail_to.pop(number, None)

    def storm(self, seconds: float, status: int = 429, retry_after: float | None = None) -> None:
        """For the next ``seconds`` (real time), every message request fails so (a provider
        rate-limiting the whole account)."""
        fault = Fault(status=status, retry_after=retry_after)
        with self._lock:
            self._storm = (time.monotonic() + seconds, fault)

    def accept_then(self, n: int = 1, how: str = "drop", seconds: float = 0.0) -> None:
        """The next ``n`` valid messages are created, then ``how``: "drop" closes the
        connection without an answer, "timeout" answers only after ``seconds``."""
        if how not in ("drop", "timeout"):
            raise ValueError(f"how must be 'drop' or 'timeout', not {how!r}")
        with self._lock:
            self._after_accept.extend([(how, float(seconds))] * n)

    def accept_then_drop(self, n: int = 1) -> None:
        """The next ``n`` messages are created, and then the connection is closed before the
        answer (a reset after the provider took the request)."""
        self.accept_then(n, "drop")

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def reset(self) -> None:
        """Forget recorded requests and every injected fault; latency back to 0."""
        with self._lock:
            self._faults.clear()
            self._fail_to.clear()
            self._after_accept.clear()
            self._storm = None
            self._requests.clear()
            self._accepted.clear()
            self._lookups.clear()
            self._latency = 0.0

    # -- what was received -------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of every message request received, in arrival order of completion."""
        with self._lock:
            return list(self._requests)

    @property
    def in_progress(self) -> int:
        """Message requests received and not answered yet (waiting out ``latency``)."""
        with self._lock:
            return self._in_progress

    @property
    def sent(self) -> list[RecordedRequest]:
        """The requests that created a message (201)."""
        return [r for r in self.requests if r.ok]

    def accepted(self, to: str | None = None) -> list[Accepted]:
        """Every message the stand-in accepted, in order (only those to ``to`` if given)."""
        with self._lock:
            found = [a for a, _ in self._accepted.values()]
        return [a for a in found if to is None or a.to == to]

    def accepted_per_recipient(self) -> dict[str, int]:
        """How many messages each recipient was sent."""
        counts: dict[str, int] = {}
        for a in self.accepted():
            counts[a.to] = counts.get(a.to, 0) + 1
        return counts

    @property
    def lookups(self) -> list[Lookup]:
        """Every list and fetch request, in order."""
        with self._lock:
            return list(self._lookups)

    @property
    def posts(self) -> int:
        """How many message requests (POST) arrived, whatever their outcome."""
        return len(self.requests)

    def find(self, sid: str) -> RecordedRequest | None:
        return next((r for r in self.requests if r.sid == sid), None)

    # -- status callbacks ----------------------------------------------------------------

    def send_status_callback(
        self,
        sid: str,
        status: str = "delivered",
        *,
        error_code: int | None = None,
        timeout: float = 5.0,
    ) -> int:
        """POST Twilio's signed status callback for message ``sid``; returns the HTTP status.

        The form fields and the ``X-Twilio-Signature`` header are what Twilio sends, signed
        with this stand-in's auth token.
        """
        record = self.find(sid)
        if record is None or not record.status_callback:
            raise LookupError(f"no message {sid} with a StatusCallback")
        params: dict[str, str] = {
            "AccountSid": record.account_sid,
            "ApiVersion": API_VERSION,
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": record.to or "",
        }
        if record.from_:
            params["From"] = record.from_
        if record.messaging_service_sid:
            params["MessagingServiceSid"] = record.messaging_service_sid
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        url = record.status_callback
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        request = urllib.request.Request(
            url,
            data=urllib.parse.urlencode(params).encode(),
            method="POST",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
                "User-Agent": "TwilioProxy/1.1",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return int(exc.code)

    # -- request handling (handler threads) ---------------------------------------------

    def _check_auth(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, _, password = decoded.partition(":")
        return secrets.compare_digest(user, self.account_sid) and secrets.compare_digest(
            password, self.auth_token
        )

    def _handle_other(self, handler: _Handler) -> None:
        handler.read_body()
        parts = urllib.parse.urlsplit(handler.path)
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        listing, one = _MESSAGES_PATH.match(parts.path), _MESSAGE_PATH.match(parts.path)
        match = listing or one
        if handler.command != "GET" or match is None:
            handler.send_json(404, error_body(404, 20404))
            return
        if not self._check_auth(handler.headers.get("Authorization")):
            handler.send_json(401, error_body(401, 20003))
            return
        if match.group("account") != self.account_sid:
            handler.send_json(404, error_body(404, 20404))
            return
        with self._lock:
            self._lookups.append(Lookup("list" if listing else "fetch", dict(query)))
            fault = self._faults.popleft() if self._faults else None
            stored = {sid: res for sid, (_, res) in self._accepted.items()}
            created = [a for a, _ in self._accepted.values()]
        if fault is not None:
            handler.send_json(fault.status, error_body(fault.status, fault.error_code))
            return
        if one is not None:
            resource = stored.get(one.group("sid"))
            if resource is None:
                handler.send_json(404, error_body(404, 20404))
            else:
                handler.send_json(200, resource)
            return
        handler.send_json(200, self._page(parts.path, query, created, stored))

    def _page(
        self,
        path: str,
        query: dict[str, str],
        created: list[Accepted],
        stored: dict[str, dict[str, Any]],
    ) -> dict[str, Any]:
        """One page of the Messages list, newest first, as Twilio pages it."""
        tests: list[Callable[[Accepted], bool]] = []
        if "To" in query:
            tests.append(lambda a: a.to == query["To"])
        if "From" in query:
            tests.append(lambda a: stored[a.sid]["from"] == query["From"])
        for key in ("DateSent", "DateSent<", "DateSent>"):
            if key in query:
                check = _date_filter(key, query[key])
                tests.append(lambda a, check=check: check(a.at))  # type: ignore[misc]
        found = [a for a in reversed(created) if all(t(a) for t in tests)]
        size = max(1, min(1000, int(query.get("PageSize") or 50)))
        page = int(query.get("Page") or 0)
        chunk = found[page * size : (page + 1) * size]
        base = {k: v for k, v in query.items() if k not in ("Page", "PageToken")}

        def uri(n: int) -> str:
            return f"{path}?" + urllib.parse.urlencode({**base, "Page": n, "PageToken": f"PT{n}"})

        more = (page + 1) * size < len(found)
        return {
            "messages": [stored[a.sid] for a in chunk],
            "end": page * size + max(0, len(chunk) - 1),
            "first_page_uri": uri(0),
            "next_page_uri": uri(page + 1) if more else None,
            "page": page,
            "page_size": size,
            "previous_page_uri": uri(page - 1) if page > 0 else None,
            "start": page * size,
            "uri": uri(page),
        }

    def _handle_post(self, handler: _Handler) -> None:
        received_at = time.monotonic()
        raw = handler.read_body()
        if raw is None:
            return
        path = urllib.parse.urlsplit(handler.path).path
        match = _MESSAGES_PATH.match(path)
        if match is None:
            handler.send_json(404, error_body(404, 20404))
            return
        form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        params = {key: values[-1] for key, values in form.items()}
        path_account = match.group("account")

        with self._lock:
            latency = self._latency
            self._in_progress += 1
        try:
            if latency > 0:
                time.sleep(latency)
            status, payload, headers, sid = self._decide(
                handler.headers.get("Authorization"), path_account, params
            )
        finally:
            with self._lock:
                self._in_progress -= 1
        record = RecordedRequest(
            to=params.get("To"),
            from_=params.get("From"),
            body=params.get("Body"),
            messaging_service_sid=params.get("MessagingServiceSid"),
            status_callback=params.get("StatusCallback"),
            sid=sid,
            received_at=received_at,
            account_sid=path_account,
            http_status=status,
            error_code=None if sid else int(payload["code"]),
            params=params,
        )
        with self._lock:
            self._requests.append(record)
            after = self._after_accept.popleft() if sid and self._after_accept else None
            if sid is not None:
                at = datetime.fromisoformat(payload.pop("_at"))
                self._accepted[sid] = (
                    Accepted(record.to or "", record.body or "", sid, at),
                    payload,
                )
        if after is not None and after[0] == "drop":
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if after is not None:
            time.sleep(after[1])  # the client has given up by then
        handler.send_json(status, payload, headers)

    def _decide(
        self, authorization: str | None, path_account: str, params: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str], str | None]:
        """(status, JSON body, extra headers, sid or None) for one message request."""
        if not self._check_auth(authorization):
            return (
                401,
                error_body(401, 20003),
                {"WWW-Authenticate": 'Basic realm="Twilio API"'},
                None,
            )
        if path_account != self.account_sid:
            return 404, error_body(404, 20404), {}, None

        to = params.get("To", "")
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
            if fault is None and self._storm is not None:
                until, storm = self._storm
                fault = storm if time.monotonic() < until else None
            if fault is None and to in self._fail_to:
                fault = self._fail_to[to]
        if fault is not None:
            headers: dict[str, str] = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            body = error_body(fault.status, fault.error_code, fault.message)
            return fault.status, body, headers, None

        if not to:
            return 400, error_body(400, 21604), {}, None
        if not _E164.match(to):
            return 400, error_body(400, 21211, f"Invalid 'To' Phone Number: {to}"), {}, None
        if not params.get("From") and not params.get("MessagingServiceSid"):
            return 400, error_body(400, 21603), {}, None
        body_text = params.get("Body", "")
        if not body_text and not params.get("MediaUrl"):
            return 400, error_body(400, 21602), {}, None

        sid = _new_sid("SM")
        return 201, self._message_resource(sid, params), {}, sid

    def _message_resource(self, sid: str, params: dict[str, str]) -> dict[str, Any]:
        at = self.now()
        now = format_datetime(at.astimezone(UTC).replace(microsecond=0), usegmt=True)
        body = params.get("Body", "")
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": now,
            "date_sent": now,  # the stand-in hands it on at once
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": params.get("From") or None,
            "messaging_service_sid": params.get("MessagingServiceSid") or None,
            "num_media": "0",
            "num_segments": str(num_segments(body)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": self.default_status,
            "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
            "to": params.get("To"),
            "uri": f"{uri}.json",
            "_at": at.isoformat(),  # taken out before it is served
        }
