"""``hearth feed``: issuing, rotating and exporting a partner's calendar feed, end to end
(the URLs the CLI prints are fetched from the served app over real HTTP)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from icalendar import Calendar

from service.core.clock import FakeClock
from service.core.crypto import new_key
from service.db.context import Hearth
from service.db.engine import Database
from tests.conftest import TEST_KEY, Cli, make_settings, snapshot
from tests.factories import add_ritual, couple_with_partners
from tests.web import serve

BASE = "https://hearth.example.org"
URL = re.compile(r"^  (https://hearth\.example\.org/feeds/([A-Za-z0-9_-]{43})\.ics)$", re.M)


@pytest.fixture
def public(db: Database, clock: FakeClock) -> Hearth:
    """The service context with a public https base URL, as deployed behind the proxy."""
    settings = make_settings(db, web={"public_base_url": BASE})
    return Hearth(settings=settings, db=db, clock=clock)


@pytest.fixture
def cli(public: Hearth) -> Cli:
    now = public.clock.now()
    cid = couple_with_partners(public.db, now)
    add_ritual(public.db, now, cid, "five-minute-check-in")
    return Cli(public)


def _token(output: str) -> str:
    (match,) = URL.finditer(output)
    return match[2]


def test_feed_url_prints_https_webcal_and_a_qr_code(cli: Cli) -> None:
    out = cli.ok("feed", "url", "Alice").output
    token = _token(out)
    assert f"\n  webcal://hearth.example.org/feeds/{token}.ics\n" in out
    qr = [line for line in out.splitlines()[3:] if line.strip()]
    assert len(qr) >= 10 and all(set(line) <= set(" █▀▄") for line in qr)
    shown = json.loads(cli.ok("feed", "url", "Sam", "--json").output)
    assert shown["partner"] == "Sam"
    assert shown["https"].startswith(f"{BASE}/feeds/") and shown["https"].endswith(".ics")
    assert shown["webcal"] == "webcal://" + shown["https"].removeprefix("https://")


def test_feed_url_refuses_to_replace_a_live_url_it_cannot_show(
    db: Database, clock: FakeClock
) -> None:
    """Without encryption keys only the hash is stored, so showing the URL again would mean
    a new token, cutting off the subscription the partner has: refused, pointing at
    `rotate`."""
    settings = make_settings(db, web={"public_base_url": BASE}, encryption={"keys": ""})
    cli = Cli(Hearth(settings=settings, db=db, clock=clock))
    couple_with_partners(db, clock.now())
    cli.ok("feed", "url", "Alice")
    before = snapshot(db)
    for args in (("feed", "url", "Alice"), ("feed", "url", "Alice", "--json")):
        result = cli(*args)
        assert result.exit_code == 2, result.output
        assert result.output == (
            "error: Alice already has a feed URL; it cannot be shown again (only its hash is "
            "stored): use `hearth feed rotate Alice` to issue a new one\n"
        )
    by_path = cli("feed", "url", "Alice & Sam/Alice")
    assert by_path.exit_code == 2
    assert "use `hearth feed rotate 'Alice & Sam/Alice'` to issue" in by_path.output
    assert snapshot(db) == before


def test_feed_url_shows_a_kept_url_again_also_after_partner_link(cli: Cli, public: Hearth) -> None:
    """With keys the feed token is kept sealed: `feed url` shows the same URL again, the
    subscription keeps working, nothing changes; after `partner link` (which made Sam's
    first feed for his page) it shows the very feed the page shows."""
    first = _token(cli.ok("feed", "url", "Alice").output)
    before = snapshot(public.db)
    assert _token(cli.ok("feed", "url", "Alice", "--no-qr").output) == first
    assert snapshot(public.db) == before
    link = cli.ok("partner", "link", "Sam", "--no-qr").output
    page_url = next(w for w in link.split() if "/page/" in w)
    sam = _token(cli.ok("feed", "url", "Sam", "--no-qr").output)
    with serve(public) as base, httpx.Client(base_url=base) as http:
        assert http.get(f"/feeds/{first}.ics").status_code == 200
        page = http.get(page_url.replace(BASE, base)).text
        assert f"/feeds/{sam}.ics" in page  # the page's subscribe link is the same feed
        assert http.get(f"/feeds/{sam}.ics").status_code == 200
        # Alice subscribed before her page existed: her first page link opens on the
        # subscribe buttons of that calendar, no click, nothing rotated.
        alice_link = cli.ok("partner", "link", "Alice", "--no-qr").output
        alice_url = next(w for w in alice_link.split() if "/page/" in w)
        alice_page = http.get(alice_url.replace(BASE, base)).text
        assert f"webcal://hearth.example.org/feeds/{first}.ics" in alice_page
        assert 'id="sub-google"' in alice_page and 'id="new-feed"' not in alice_page
        assert http.get(f"/feeds/{first}.ics").status_code == 200


def test_a_key_rotation_keeps_the_calendar_a_partner_subscribed(
    cli: Cli, public: Hearth, db: Database, clock: FakeClock
) -> None:
    """`crypto reencrypt` seals kept feed tokens again under the new key: once the old key
    is dropped, the page and `feed url` still show the calendar already subscribed."""
    first = _token(cli.ok("feed", "url", "Alice").output)
    link = cli.ok("partner", "link", "Alice", "--no-qr").output
    page_url = next(w for w in link.split() if "/page/" in w)
    fresh = new_key()
    both = Hearth(
        make_settings(
            db, web={"public_base_url": BASE}, encryption={"keys": f"{fresh},{TEST_KEY}"}
        ),
        db,
        clock,
    )
    done = json.loads(Cli(both).ok("crypto", "reencrypt", "--json").output)
    assert done["feeds"] == 1
    settings = make_settings(db, web={"public_base_url": BASE}, encryption={"keys": fresh})
    only_new = Hearth(settings=settings, db=db, clock=clock)
    assert _token(Cli(only_new).ok("feed", "url", "Alice", "--no-qr").output) == first
    with serve(only_new) as base, httpx.Client(base_url=base) as http:
        page = http.get(page_url.replace(BASE, base)).text
        assert f"webcal://hearth.example.org/feeds/{first}.ics" in page
        assert http.get(f"/feeds/{first}.ics").status_code == 200


def test_feed_rotate_cuts_off_only_the_old_url(cli: Cli, public: Hearth) -> None:
    old = _token(cli.ok("feed", "url", "Alice").output)
    sam = _token(cli.ok("feed", "url", "Sam", "--no-qr").output)
    with serve(public) as base, httpx.Client(base_url=base) as http:
        assert http.get(f"/feeds/{old}.ics").status_code == 200
        new = _token(cli.ok("feed", "rotate", "Alice").output)
        assert http.get(f"/feeds/{old}.ics").status_code == 404
        assert http.get(f"/feeds/{new}.ics").status_code == 200
        assert http.get(f"/feeds/{sam}.ics").status_code == 200
        # rotate also issues a first URL
        couple_with_partners(public.db, public.clock.now(), name="Bea & Kim")
        first = _token(cli.ok("feed", "rotate", "Bea & Kim/Alice").output)
        assert http.get(f"/feeds/{first}.ics").status_code == 200


def test_feed_export_writes_a_file_icalendar_parses(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "alice-sam.ics"
    out = cli.ok("feed", "export", "Alice & Sam", "-o", str(target), "--alarms").output
    body = target.read_bytes()
    assert out == f"wrote {target} ({len(body)} bytes)\n"
    cal = Calendar.from_ical(body)
    (event,) = cal.walk("VEVENT")
    assert str(event["SUMMARY"]) == "Five-minute check-in" and event.walk("VALARM")
    assert cli.ok("feed", "export", "Alice & Sam", "--alarms").stdout_bytes == body


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("feed", "url", "Nobody"), "error: partner 'Nobody' not found\n"),
        (("feed", "rotate", "Nobody"), "error: partner 'Nobody' not found\n"),
        (("feed", "export", "Nobody & Else"), "error: couple 'Nobody & Else' not found\n"),
    ],
)
def test_feed_refusals(cli: Cli, db: Database, args: tuple[str, ...], message: str) -> None:
    before = snapshot(db)
    result = cli(*args)
    assert (result.exit_code, result.output) == (2, message)
    assert snapshot(db) == before


def test_feed_export_to_an_unwritable_place_is_one_line(run: Cli, db: Database) -> None:
    run.ok("couple", "add", "Alice & Sam", "-z", "Europe/Berlin")
    result = run("feed", "export", "Alice & Sam", "-o", "/nonexistent/dir/x.ics")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: --output: cannot write /nonexistent/dir/x.ics: No such file or directory"
    )
