"""The web side under attack (issue 23), over real HTTP: each test is one way in that was
open and is now shut. Emails go out through the real dispatcher to the SMTP sink and the
links are taken from what the sink received; the memory check runs a real ``hearth web``
in its own process and reads its RSS from /proc."""

from __future__ import annotations

import html
import os
import random
import re
import secrets
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from service.calendar import feed_keep, feed_tokens
from service.channels import build
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Partner
from service.domain import partners
from service.domain import unsubscribe as links
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from service.web import create_app
from service.web.page import tokens as page_tokens
from tests import peers
from tests.conftest import TEST_KEY, Cli, make_settings, snapshot
from tests.factories import TONIGHT, add_ritual, couple_with_partners
from tests.peers.smtp_sink import SmtpSink
from tests.peers.twilio_standin import TwilioStandIn
from tests.processes import free_port, wait_for
from tests.web import serve

FROM_EMAIL = re.compile(r"https://hearth\.example\.org(/page/from-email/\S+)")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Site:
    """Alice and Sam with a nightly check-in; email through the sink, the app on uvicorn."""

    def __init__(self, hearth: Hearth, sink: SmtpSink, base: str) -> None:
        self.hearth, self.sink, self.base = hearth, sink, base
        self.night = 0
        with hearth.db.session() as s:
            alice = partners.resolve(s, "Alice")
            self.page = page_tokens.issue(s, hearth.clock.now(), alice, hearth.keys)

    @property
    def clock(self) -> FakeClock:
        assert isinstance(self.hearth.clock, FakeClock)
        return self.hearth.clock

    def email_link(self) -> str:
        """Send the next night's check-in; the path of the page link in Alice's email."""
        self.clock.set(TONIGHT + timedelta(days=self.night))
        self.night += 1
        seen = len(self.sink.messages)
        d = Dispatcher(self.hearth, build(self.hearth.settings), rng=random.Random(1))
        d.run_once()
        d.close()
        mine = [m for m in self.sink.messages[seen:] if m.rcpt_tos == ["alice@example.org"]]
        assert len(mine) == 1, "one email to Alice per night"
        found = FROM_EMAIL.search(mine[0].text())
        assert found is not None, mine[0].text()
        return found[1]

    def open_from_email(self, path: str) -> httpx.Response:
        """What Alice's browser does: GET the link, press the button (its form as served)."""
        shown = httpx.get(self.base + path)
        if shown.status_code != 200:
            return shown
        form = {"open": "1"}
        token = CSRF.search(shown.text)
        if token:
            form["csrf"] = html.unescape(token[1])
        return httpx.post(self.base + path, data=form)

    def page_ok(self, token: str) -> bool:
        return httpx.get(f"{self.base}/page/{token}").status_code == 200

    def csrf(self, token: str) -> str:
        return page_tokens.csrf(token)


@pytest.fixture
def site(hearth: Hearth, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink) -> Iterator[Site]:
    h = Hearth(
        settings=make_settings(hearth.db, **peers.sections(twilio_standin, smtp_sink)),
        db=hearth.db,
        clock=hearth.clock,
    )
    now = h.clock.now()
    cid = couple_with_partners(h.db, now)
    add_ritual(h.db, now, cid, "five-minute-check-in")
    planner.plan(h.db.write_engine, now, timedelta(days=12), 30)
    with serve(h) as base:
        yield Site(h, smtp_sink, base)


# 1. An old email is no longer a lasting key to the page.


def test_after_a_new_page_link_no_earlier_link_opens_the_page(site: Site) -> None:
    first, second = site.email_link(), site.email_link()
    with site.hearth.db.session() as s:
        unsubscribe = links.token(s, partners.resolve(s, "Alice"))
    rotated = httpx.post(
        f"{site.base}/page/{site.page}/rotate-link", data={"csrf": site.csrf(site.page)}
    )
    assert rotated.status_code == 303
    new = rotated.headers["location"].split("/page/", 1)[1].split("?")[0]
    assert site.page_ok(new)
    assert not site.page_ok(site.page)
    for path in (first, second):  # emails sent before the new link: both unused
        assert site.open_from_email(path).status_code == 404
    # The unsubscribe token opens nothing (it used to issue a page link: a forwarded email
    # locked the partner out again and again).
    forwarded = httpx.post(f"{site.base}/page/from-email/{unsubscribe}", data={"open": "1"})
    assert forwarded.status_code == 404
    assert site.page_ok(new)


def test_an_email_link_opens_the_page_once_behind_csrf(site: Site) -> None:
    path = site.email_link()
    before = snapshot(site.hearth.db)
    assert httpx.get(site.base + path).status_code == 200  # a mail scanner's GET
    assert httpx.post(site.base + path, data={"open": "1"}).status_code == 403  # no CSRF
    assert snapshot(site.hearth.db) == before
    opened = site.open_from_email(path)
    assert opened.status_code == 303
    page = opened.headers["location"].split("/page/", 1)[1]
    assert site.page_ok(page) and not site.page_ok(site.page)
    assert site.open_from_email(path).status_code == 404  # spent
    assert site.page_ok(page)  # and the spent link did not rotate the page again


def test_an_email_link_expires_after_seven_days(site: Site) -> None:
    path = site.email_link()
    site.clock.advance(timedelta(days=7))
    assert httpx.get(site.base + path).status_code == 404
    assert site.open_from_email(path).status_code == 404
    assert site.page_ok(site.page)


def test_email_grants_are_stored_as_hashes_only(site: Site) -> None:
    path = site.email_link()
    grant = path.rsplit("/", 1)[1]
    dump = repr(snapshot(site.hearth.db))
    assert grant not in dump and len(grant) >= 43
    assert feed_tokens.digest(grant) in dump  # SHA-256, as every link token


def test_the_button_is_rate_limited_and_counts_only_real_grants(site: Site) -> None:
    path = site.email_link()
    codes = [httpx.post(site.base + path, data={"open": "1"}).status_code for _ in range(12)]
    assert codes[:10] == [403] * 10 and codes[10:] == [429, 429]
    invented = f"/page/from-email/{secrets.token_urlsafe(32)}"
    assert httpx.post(site.base + invented, data={"open": "1"}).status_code == 404


# 2. Bodies are bounded before anything reads them.


def _stream(port: int, path: str, size: int, *, chunked: bool, method: str = "POST") -> int:
    """Send ``size`` bytes of body (or until the server answers); the answer's status."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    sock.sendall(
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\n{framing}\r\n\r\n".encode()
    )
    sent, pending = 0, b""
    with sock:
        while True:
            readable, _, _ = select.select([sock], [sock], [], 30)
            if readable:
                break
            if not pending:
                if sent >= size:
                    if chunked:
                        sock.sendall(b"0\r\n\r\n")
                    select.select([sock], [], [], 30)
                    break
                piece = b"a" * min(65536, size - sent)
                pending = b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece
                sent += len(piece)
            try:
                pending = pending[sock.send(pending) :]
            except OSError:  # the server closed its side: its answer is waiting
                break
        answer = b""
        while b"\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def _rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status)[1])  # type: ignore[index]


@pytest.fixture
def web_process(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A real ``hearth web`` on SQLite: (pid, port)."""
    from service.db import migrate

    url = f"sqlite:///{tmp_path / 'h.db'}"
    db = Database(url)
    migrate.upgrade(db)
    db.dispose()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    env.update(HEARTH_DATABASE_URL=url, HEARTH_LOG_FORMAT="json")
    out = (tmp_path / "web.out").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "web", "--port", str(port)],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, 30, "hearth web")
        yield proc.pid, port
    finally:
        proc.terminate()
        proc.wait(10)
        out.close()


BIG = 300 * 1024 * 1024
ROUTES = [
    f"/page/{'A' * 43}/pause",
    f"/page/from-email/{'A' * 43}",
    f"/unsubscribe/1.1.{'A' * 32}",
    "/twilio/inbound",
    "/twilio/status",
    f"/feeds/{'A' * 43}.ics",
    "/healthz",
    "/no-such-route",
]


@pytest.mark.slow
def test_a_300_mb_body_to_any_route_is_refused_413_and_memory_stays_flat(
    web_process: tuple[int, int],
) -> None:
    pid, port = web_process
    for path in ROUTES[:2]:  # warm up: first requests load code the server keeps anyway
        _stream(port, path, 1024, chunked=False)
    before = _rss_kb(pid)
    for path in ROUTES:
        assert _stream(port, path, BIG, chunked=False) == 413, path
    for path in ROUTES[:4]:
        assert _stream(port, path, BIG, chunked=True) == 413, path
    grown = _rss_kb(pid) - before
    assert grown < 10 * 1024, f"RSS grew by {grown} kB"
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200


def test_each_route_has_its_body_limit(site: Site) -> None:
    port = int(urlsplit(site.base).port or 0)
    page = f"/page/{site.page}/pause"
    assert _stream(port, page, 4097, chunked=False) == 413
    assert _stream(port, page, 4097, chunked=True) == 413
    assert _stream(port, "/twilio/inbound", 64 * 1024 + 1, chunked=True) == 413
    # Under the limit, the route answers as it always did: a form without its CSRF token, a
    # webhook without a signature (both 403).
    assert _stream(port, page, 4000, chunked=True) == 403
    assert _stream(port, "/twilio/inbound", 60 * 1024, chunked=False) == 403


# 3. The write limiter cannot be flooded.


def test_a_flood_of_invented_tokens_leaves_the_limiter_empty(hearth: Hearth) -> None:
    app = create_app(hearth)
    with hearth.db.session() as s:
        cid = couple_with_partners(hearth.db, hearth.clock.now())
        add_ritual(hearth.db, hearth.clock.now(), cid, "five-minute-check-in")
    with hearth.db.session() as s:
        alice = partners.resolve(s, "Alice")
        token = page_tokens.issue(s, hearth.clock.now(), alice, hearth.keys)
    with serve(hearth, app=app) as base, httpx.Client(base_url=base) as client:
        for _ in range(2000):
            fake = secrets.token_urlsafe(32)
            r = client.post(f"/page/{fake}/pause", data={"csrf": page_tokens.csrf(fake)})
            assert r.status_code == 404
        assert len(app.state.page_limiter) == 0
        ok = client.post(f"/page/{token}/resume", data={"csrf": page_tokens.csrf(token)})
        assert ok.status_code in (303, 400)  # the real partner is not rate limited
        assert len(app.state.page_limiter) == 1


def test_the_limiter_holds_a_fixed_number_of_keys_and_still_limits() -> None:
    from service.web.limiter import WRITE_LIMIT, WriteLimiter

    clock = FakeClock(TONIGHT)
    limiter = WriteLimiter(clock.monotonic, size=100)
    for i in range(50_000):
        limiter.allow(f"k{i}")
    assert len(limiter) == 100
    assert [limiter.allow("real") for _ in range(WRITE_LIMIT + 1)][-2:] == [True, False]
    clock.advance(timedelta(minutes=1))
    assert limiter.allow("real")


# 4. No home-made crypto: the kept feed token is Fernet under the service's keys.


def test_the_kept_feed_token_is_fernet_and_a_tampered_or_stale_copy_is_never_shown(
    hearth: Hearth,
) -> None:
    now = hearth.clock.now()
    couple_with_partners(hearth.db, now)
    with hearth.db.session() as s:
        alice = partners.resolve(s, "Alice")
        page_tokens.issue(s, now, alice, hearth.keys)  # the first link brings a first feed
        kept, digest, pid = alice.feed_token_kept, alice.feed_token_hash, alice.id
    assert kept is not None and kept.startswith("enc1:")
    feed = Fernet(TEST_KEY.encode()).decrypt(kept.removeprefix("enc1:").encode()).decode()
    assert feed_tokens.digest(feed) == digest
    token = kept.removeprefix("enc1:")
    flipped = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
    with hearth.db.session() as s:
        again = s.get(Partner, pid)
        assert again is not None
        assert feed_keep.recover(again, hearth.keys) == feed
        again.feed_token_kept = "enc1:" + flipped
        assert feed_keep.recover(again, hearth.keys) is None
        # A copy of a feed token rotated since (not kept again) is never shown.
        again.feed_token_kept = kept
        feed_tokens.issue(s, now, again)
        assert feed_keep.recover(again, hearth.keys) is None


# 5. Headers, origins, the metrics path, descriptions, the unsubscribe lookup, the CLI.

FRAMING = {"x-frame-options": "DENY", "referrer-policy": "no-referrer", "cache-control": "no-store"}


def test_every_html_response_carries_the_page_headers(site: Site) -> None:
    with site.hearth.db.session() as s:
        unsubscribe = links.token(s, partners.resolve(s, "Alice"))
    email = site.email_link()
    responses = [
        httpx.get(f"{site.base}/page/{site.page}"),
        httpx.get(site.base + email),
        httpx.get(f"{site.base}/unsubscribe/{unsubscribe}"),
        httpx.post(
            f"{site.base}/unsubscribe/{unsubscribe}", data={"List-Unsubscribe": "One-Click"}
        ),
    ]
    for r in responses:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        for name, value in FRAMING.items():
            assert r.headers[name] == value, (r.url, name)
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "null", "Sec-Fetch-Site": "cross-site"},  # a sandboxed frame
    ],
)
def test_a_cross_site_post_changes_nothing(site: Site, headers: dict[str, str]) -> None:
    with site.hearth.db.session() as s:
        unsubscribe = links.token(s, partners.resolve(s, "Alice"))
    before = snapshot(site.hearth.db)
    page = httpx.post(
        f"{site.base}/page/{site.page}/pause",
        data={"csrf": site.csrf(site.page), "for": "1d"},
        headers=headers,
    )
    unsub = httpx.post(
        f"{site.base}/unsubscribe/{unsubscribe}",
        data={"List-Unsubscribe": "One-Click"},
        headers=headers,
    )
    assert (page.status_code, unsub.status_code) == (403, 403)
    assert snapshot(site.hearth.db) == before


def test_a_same_origin_post_goes_through_and_a_body_must_be_a_form(site: Site) -> None:
    csrf = site.csrf(site.page)
    wrong_type = httpx.post(
        f"{site.base}/page/{site.page}/resume",
        content=f"csrf={csrf}".encode(),
        headers={"Content-Type": "text/plain"},
    )
    assert wrong_type.status_code == 415
    same = httpx.post(
        f"{site.base}/page/{site.page}/resume",
        data={"csrf": csrf},
        headers={"Origin": site.base, "Sec-Fetch-Site": "same-origin"},
    )
    assert same.status_code in (303, 400)  # through to the page (not paused: a 400 line)
    public = httpx.post(
        f"{site.base}/page/{site.page}/resume",
        data={"csrf": csrf},
        headers={"Origin": "https://hearth.example.org"},
    )
    assert public.status_code in (303, 400)


def test_metrics_answer_only_at_their_exact_path(site: Site) -> None:
    assert httpx.get(site.base + "/metrics").status_code == 200
    for path in ("/%6detrics", "/%6D%65trics", "/metric%73"):
        r = httpx.get(site.base + path)
        assert r.status_code == 404 and "hearth_" not in r.text, path


@pytest.mark.parametrize("char", ["\x0b", "\x0c", "\x1c", "\u0085", "\u2028"])
def test_a_description_with_a_control_character_is_refused(
    run: Cli, hearth: Hearth, char: str
) -> None:
    run.ok("couple", "add", "Ann & Bo", "--timezone", "Europe/Berlin")
    args = ("--kind", "custom", "--title", "Walk", "--at", "19:00", "--every", "daily")
    before = snapshot(hearth.db)
    added = run("ritual", "add", "Ann & Bo", *args, "--description", f"a{char}b")
    assert added.exit_code == 2
    assert added.output.strip() == "error: description: must not contain control characters"
    assert snapshot(hearth.db) == before
    run.ok("ritual", "add", "Ann & Bo", *args, "--description", "line one\nline two")
    edited = run("ritual", "edit", "Walk", "--description", f"{char}")
    assert edited.exit_code == 2 and edited.output.count("\n") == 1


def test_the_unsubscribe_lookup_does_the_same_work_for_any_forged_token(
    hearth: Hearth,
) -> None:
    """The MAC is checked before any partner row is read: a forged token for an existing
    partner and generation runs the same statements as one for nobody (no timing oracle)."""
    couple_with_partners(hearth.db, hearth.clock.now())
    with hearth.db.session() as s:
        alice = partners.resolve(s, "Alice")
        real_id, gen = alice.id, alice.unsubscribe_generation
        links.token(s, alice)  # the key exists
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(" ".join(statement.split()))

    forged = {
        "existing": f"{real_id}.{gen}.{'A' * 32}",
        "missing": f"999999.1.{'A' * 32}",
    }
    seen = {}
    sa.event.listen(hearth.db.engine, "before_cursor_execute", count)
    try:
        for what, token in forged.items():
            statements.clear()
            with hearth.db.session() as s:
                assert links.partner_for(s, token) is None
            seen[what] = list(statements)
    finally:
        sa.event.remove(hearth.db.engine, "before_cursor_execute", count)
    assert seen["existing"] == seen["missing"]
    assert not any("FROM partner" in s for s in seen["existing"])


@pytest.mark.parametrize(
    "command",
    [("couple", "remove", "1"), ("partner", "remove", "Sam"), ("ritual", "remove", "1")],
)
def test_a_confirmation_with_stdin_closed_says_how_to_confirm(
    run: Cli, hearth: Hearth, command: tuple[str, ...]
) -> None:
    cid = couple_with_partners(hearth.db, hearth.clock.now())
    add_ritual(hearth.db, hearth.clock.now(), cid, "five-minute-check-in")
    before = snapshot(hearth.db)
    result = run(*command)  # CliRunner: standard input empty, as when it is closed
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: ") and last.endswith("(use --yes to confirm)")
    assert snapshot(hearth.db) == before


def test_rotating_the_link_key_ends_every_unsubscribe_link_sent(run: Cli, hearth: Hearth) -> None:
    couple_with_partners(hearth.db, hearth.clock.now())
    with hearth.db.session() as s:
        old = links.token(s, partners.resolve(s, "Alice"))
    asked = run("crypto", "rotate-link-key")
    assert asked.exit_code == 2 and asked.output.strip().endswith("(use --yes to confirm)")
    with hearth.db.session() as s:
        assert links.partner_for(s, old) is not None  # unchanged without the confirmation
    run.ok("crypto", "rotate-link-key", "--yes")
    with hearth.db.session() as s:
        assert links.partner_for(s, old) is None
        new = links.token(s, partners.resolve(s, "Alice"))
        assert new != old and links.partner_for(s, new) is not None
