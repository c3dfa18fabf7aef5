"""Replying to Hearth's emails, end to end: nudges through SMTP to the aiosmtpd sink, replies
delivered into a real IMAP server (Dovecot on loopback) and read by the mailbox worker, on
SQLite and PostgreSQL.

Alice (SMS + email, Berlin) and Sam (email only) keep the nightly check-in. Replies are
shaped like real mail clients' (Gmail, Apple Mail, Outlook; English, German, Spanish). What
each test asserts is what the partner sees: the state their words changed and the mail the
SMTP sink accepted for them.
"""

from __future__ import annotations

import io
import random
import re
import threading
import time
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import pytest
import sqlalchemy as sa

from service.channels import build_one
from service.channels.console import ConsoleTransport
from service.core.clock import FakeClock
from service.core.config import load_settings
from service.core.exceptions import ConfigError, DatabaseUnavailable
from service.core.metrics import REGISTRY
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Answer, Channel, CheckIn, Couple, Partner, Reply
from service.domain import partners, reply_address
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from service.replies import mail_text
from service.replies.mailbox import MailboxWorker
from service.runtime.daemon import Daemon
from tests.conftest import make_settings
from tests.factories import TONIGHT, add_ritual, couple_with_partners
from tests.peers.imap_server import DovecotServer
from tests.peers.smtp_sink import ReceivedMail, SmtpSink

BASE = "hearth@example.org"
SAM = "sam@example.org"
ALICE = "alice@example.org"
PLUS = re.compile(r"hearth\+[a-z0-9-]+@example\.org")


def _imap(dovecot: DovecotServer) -> dict[str, Any]:
    return {
        "host": dovecot.host,
        "port": dovecot.port,
        "security": "none",
        "username": dovecot.user,
        "password": dovecot.password,
        "reply_address": BASE,
        "timeout_seconds": 10,
    }


def _idling(dovecot: DovecotServer) -> None:
    """Until the worker waits in IDLE (a bounded wait for the other thread, not for time)."""
    deadline = time.monotonic() + 15
    while not dovecot.idling():
        assert time.monotonic() < deadline, "the worker never entered IDLE"
        time.sleep(0.05)


@pytest.fixture
def hearth(db: Database, clock: FakeClock, smtp_sink: SmtpSink, dovecot: DovecotServer) -> Hearth:
    settings = make_settings(
        db,
        channels={"sms": "console", "email": "smtp"},
        smtp={"host": smtp_sink.host, "port": smtp_sink.port, "security": "none"},
        imap=_imap(dovecot),
    )
    h = Hearth(settings=settings, db=db, clock=clock)
    cid = couple_with_partners(db, clock.now())
    add_ritual(db, clock.now(), cid, "five-minute-check-in")
    planner.plan(db.write_engine, clock.now(), timedelta(hours=48), 30)
    return h


@pytest.fixture
def texts() -> io.StringIO:
    """What the console SMS channel printed: the texts phones would get."""
    return io.StringIO()


@pytest.fixture
def dispatcher(hearth: Hearth, texts: io.StringIO) -> Dispatcher:
    transports = {
        Channel.SMS: ConsoleTransport(Channel.SMS, texts),
        Channel.EMAIL: build_one(hearth.settings, Channel.EMAIL),
    }
    return Dispatcher(hearth, transports, rng=random.Random(1))


def _to(sink: SmtpSink, address: str) -> list[ReceivedMail]:
    return [m for m in sink.messages if address in m.rcpt_tos]


def _nudged(clock: FakeClock, d: Dispatcher, sink: SmtpSink, sent: int = 3) -> str:
    """Tonight's nudges go out; returns Sam's reply address (the nudge's Reply-To)."""
    clock.set(TONIGHT + timedelta(minutes=1))
    assert d.run_once().sent == sent  # Alice: SMS and email; Sam: email
    (nudge,) = _to(sink, SAM)
    reply_to = str(nudge.message["Reply-To"])
    assert PLUS.fullmatch(reply_to), reply_to
    assert reply_to != str(_to(sink, ALICE)[0].message["Reply-To"])  # one per partner
    return reply_to


def _mail(
    to: str,
    body: str,
    *,
    sender: str = f"Sam <{SAM}>",
    subject: str = "Re: Five-minute check-in at 21:00",
    message_id: str | None = None,
    html: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or make_msgid(domain="mail.example.com")
    for k, v in (headers or {}).items():
        msg[k] = v
    if html is None:
        msg.set_content(body)
    else:
        msg.set_content(html, subtype="html")
    return msg.as_bytes()


def _read(hearth: Hearth) -> int:
    """One pass of the daemon's mailbox worker over the real IMAP server."""
    worker = MailboxWorker(hearth, threading.Event())
    worker.mailbox.open()
    try:
        return worker.drain()
    finally:
        worker.mailbox.close()


def _count(outcome: str) -> float:
    return REGISTRY.get_sample_value("hearth_email_replies_total", {"outcome": outcome}) or 0.0


def _sam(hearth: Hearth) -> Partner:
    with hearth.db.session() as s:
        p = s.scalars(sa.select(Partner).where(Partner.name == "Sam")).one()
        s.expunge(p)
        return p


def _done(hearth: Hearth, name: str) -> int:
    with hearth.db.session() as s:
        return int(
            s.scalar(
                sa.select(sa.func.count())
                .select_from(CheckIn)
                .join(Partner, Partner.id == CheckIn.partner_id)
                .where(Partner.name == name)
            )
            or 0
        )


GMAIL_EN = """Done!

On Mon, Jan 5, 2026 at 9:01 PM Hearth <hearth@example.org> wrote:
> Five-minute check-in at 21:00.
>
> Reply to this email with DONE, SKIP, SNOOZE 30, PAUSE 3D or STOP.
"""


def test_done_by_email_marks_it_done_and_answers_by_email(
    hearth: Hearth,
    clock: FakeClock,
    dispatcher: Dispatcher,
    smtp_sink: SmtpSink,
    dovecot: DovecotServer,
) -> None:
    reply_to = _nudged(clock, dispatcher, smtp_sink)
    nudge = _to(smtp_sink, SAM)[0]
    assert "Reply to this email with your answer" in nudge.text()  # the question is asked
    dovecot.append(_mail(reply_to, GMAIL_EN))
    clock.advance(timedelta(minutes=3))
    assert _read(hearth) == 1
    assert _done(hearth, "Sam") == 1
    dispatcher.run_once()
    (_, answer) = _to(smtp_sink, SAM)
    assert "Hearth: lovely, Five-minute check-in marked done." in answer.text()
    assert answer.message["Reply-To"] == reply_to  # the conversation can go on
    # Handled once: flagged read on the server, never read again.
    assert [flags for _uid, flags in dovecot.messages()] == [(b"\\Seen",)]
    assert _read(hearth) == 0


OUTLOOK_DE = """PAUSE 3 Tage

Viele Grüße
Sam

Von: Hearth <hearth@example.org>
Gesendet: Montag, 5. Januar 2026 21:01
An: Sam <sam@example.org>
Betreff: Fünf-Minuten-Check-in um 21:00

Fünf-Minuten-Check-in um 21:00.
"""


def test_pause_by_an_outlook_reply_in_german_pauses_the_couple(
    hearth: Hearth,
    clock: FakeClock,
    dispatcher: Dispatcher,
    smtp_sink: SmtpSink,
    dovecot: DovecotServer,
) -> None:
    with hearth.db.session() as s:
        sam = s.scalars(sa.select(Partner).where(Partner.name == "Sam")).one()
        sam.language = "de"
    reply_to = _nudged(clock, dispatcher, smtp_sink)
    dovecot.append(_mail(reply_to, OUTLOOK_DE))
    assert _read(hearth) == 1
    with hearth.db.session() as s:
        couple = s.scalars(sa.select(Couple)).one()
        assert couple.is_paused(clock.now())
        assert not couple.is_paused(clock.now() + timedelta(days=3, hours=1))
    dispatcher.run_once()
    answer = _to(smtp_sink, SAM)[-1]
    assert "pausiert bis" in answer.text()
    # Alice is told, on her first channel (SMS); no email reaches her about it.
    assert len(_to(smtp_sink, ALICE)) == 1


APPLE_ES = """STOP

Enviado desde mi iPhone

> El 5 ene 2026, a las 21:01, Hearth <hearth@example.org> escribió:
>
> Check-in de cinco minutos a las 21:00.
"""


def test_stop_by_an_apple_mail_reply_in_spanish_ends_the_emails(
    hearth: Hearth,
    clock: FakeClock,
    dispatcher: Dispatcher,
    smtp_sink: SmtpSink,
    dovecot: DovecotServer,
) -> None:
    with hearth.db.session() as s:
        s.scalars(sa.select(Partner).where(Partner.name == "Sam")).one().language = "es"
    reply_to = _nudged(clock, dispatcher, smtp_sink)
    dovecot.append(_mail(reply_to, APPLE_ES))
    assert _read(hearth) == 1
    assert _sam(hearth).email_opted_out_at is not None
    clock.set(TONIGHT + timedelta(days=1, minutes=1))
    planner.plan(hearth.db.write_engine, clock.now(), timedelta(hours=48), 30)
    dispatcher.run_once()
    assert len(_to(smtp_sink, SAM)) == 1  # only the first nudge: no answer, no next nudge
    assert len(_to(smtp_sink, ALICE)) == 2  # Alice's go on


def test_a_forged_from_without_the_token_changes_nothing(
    hearth: Hearth,
    clock: FakeClock,
    dispatcher: Dispatcher,
    smtp_sink: SmtpSink,
    dovecot: DovecotServer,
) -> None:
    reply_to = _nudged(clock, dispatcher, smtp_sink)
    forged = reply_to[: -len("@example.org")][:-4] + "aaaa@example.org"  # a guessed token
    dovecot.append(_mail(BASE, "STOP"))  # From Sam, to the base address
    dovecot.append(_mail(forged, "STOP"))
    dovecot.append(_mail(f"someone+{reply_to.split('+')[1]}", "STOP"))  # another mailbox
    before = {k: _count(k) for k in ("unknown_token", "no_token")}
    assert _read(hearth) == 3
    assert _sam(hearth).email_opted_out_at is None
    # What the operator sees: ignored, by kind, in /metrics.
    assert _count("unknown_token") - before["unknown_token"] == 1
    assert _count("no_token") - before["no_token"] == 2
    with hearth.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Reply)) == 0
    dispatcher.run_once()
    assert len(_to(smtp_sink, SAM)) == 1  # the nudge; nothing answered
    assert all(flags == (b"\\Seen",) for _uid, flags in dovecot.messages())  # read once


def test_the_same_message_twice_is_acted_on_once(
    hearth: Hearth,
    clock: FakeClock,
    dispatcher: Dispatcher,
    smtp_sink: SmtpSink,
    dovecot: DovecotServer,
) -> None:
    reply_to = _nudged(clock, dispatcher, smtp_sink)
    raw = _mail(reply_to, "SNOOZE 30", message_id="<same-1@mail.example.com>")
    dovecot.append(raw)
    dovecot.append(raw)  # delivered twice (a retried delivery, a crash before the flag)
    assert _read(hearth) == 2
    dispatcher.run_once()
    assert len(_to(smtp_sink, SAM)) == 2  # the nudge and one answer
    with hearth.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Reply)) == 1


# Outlook's HTML reply: the original below a rule, in a div of its own, no blockquote.
OUTLOOK_HTML = (
    '<html><head><style>p {{margin:0}}</style></head><body><div dir="ltr">{words}</div>'
    '<div id="appendonsend"></div><hr style="display:inline-block;width:98%">'
    '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri"><b>From:</b> Hearth '
    "&lt;hearth+1-1-abc@example.org&gt;<br><b>Sent:</b> Monday, January 5, 2026 9:01 PM<br>"
    "<b>To:</b> Sam &lt;sam@example.org&gt;<br><b>Subject:</b> Five-minute check-in</font>"
    "<div>&nbsp;</div></div><div><p>Five-minute check-in at 21:00. Reply STOP to opt out."
    "</p></div></body></html>"
)
# Gmail's: the attribution and the quote in a div of class gmail_quote.
GMAIL_HTML = (
    '<div dir="ltr">{words}</div><br><div class="gmail_quote"><div dir="ltr" '
    'class="gmail_attr">Am Mo., 5. Jan. 2026 um 21:01 Uhr schrieb Hearth &lt;<a href="mailto:'
    'hearth@example.org">hearth@example.org</a>&gt;:<br></div><blockquote class="gmail_quote">'
    "<div>Five-minute check-in. Reply STOP to opt out.</div></blockquote></div>"
)


@pytest.mark.parametrize("markup", [OUTLOOK_HTML, GMAIL_HTML], ids=["outlook", "gmail"])
def test_an_html_reply_is_read_as_its_text(markup: str) -> None:
    text = mail_text.html_to_text(markup.format(words="Der Spaziergang &amp; das Eis"))
    assert mail_text.new_words(text, "de") == "Der Spaziergang & das Eis"


def test_an_html_only_reply_and_an_automatic_one(
    hearth: Hearth,
    clock: FakeClock,
    dispatcher: Dispatcher,
    smtp_sink: SmtpSink,
    dovecot: DovecotServer,
) -> None:
    reply_to = _nudged(clock, dispatcher, smtp_sink)
    vacation = {"Auto-Submitted": "auto-replied"}
    dovecot.append(_mail(reply_to, "I am away until Monday.", headers=vacation))
    outlook_html = OUTLOOK_HTML.format(words="Done.")
    dovecot.append(_mail(reply_to, "", html=outlook_html))
    assert _read(hearth) == 2
    assert _done(hearth, "Sam") == 1  # "Done.": DONE; the quoted STOP is not read
    assert _sam(hearth).email_opted_out_at is None
    dispatcher.run_once()
    answers = _to(smtp_sink, SAM)[1:]
    assert [("marked done" in m.text()) for m in answers] == [True]  # none to the vacation


def test_answers_by_email_are_revealed_to_both_by_email(
    hearth: Hearth,
    clock: FakeClock,
    dispatcher: Dispatcher,
    texts: io.StringIO,
    smtp_sink: SmtpSink,
    dovecot: DovecotServer,
) -> None:
    # Both take part in the shared question; Sam takes no texts, so the email is his way.
    with hearth.db.session() as s:
        for p in s.scalars(sa.select(Partner)):
            p.full_text = True
        sam = s.scalars(sa.select(Partner).where(Partner.name == "Sam")).one()
        partners.edit(s, clock.now(), sam, phone="+12125550123", channels="email,sms")
        sam.language = "es"
    reply_to = _nudged(clock, dispatcher, smtp_sink, sent=4)  # and Sam's SMS nudge
    nudge = _to(smtp_sink, SAM)[0]
    assert "Responde a este correo con tu respuesta" in nudge.text()
    html = nudge.html() or ""
    assert re.search(r'<a href="http://[^"]+/page/from-email/[^"]+"[^>]*>Responde en tu', html)
    alice_to = str(_to(smtp_sink, ALICE)[0].message["Reply-To"])
    gmail_es = (
        "Cocinar juntos el domingo\n\n-- \nSam\nIngeniero\n\n"
        "El lun, 5 ene 2026 a las 21:01, Hearth (<hearth@example.org>) escribió:\n"
        "> ¿Qué te hizo sonreír hoy?\n"
    )
    dovecot.append(_mail(reply_to, gmail_es))
    assert _read(hearth) == 1
    dispatcher.run_once()
    got = _to(smtp_sink, SAM)[-1]
    assert "Cocinar" not in " ".join(m.text() for m in _to(smtp_sink, ALICE))
    assert "Hearth: tenemos tu respuesta." in got.text()
    outlook_en = (
        "The walk by the river\n\n-----Original Message-----\nFrom: Hearth "
        "<hearth@example.org>\nSent: Monday, January 5, 2026 9:01 PM\nTo: Alice\n"
        "Subject: Five-minute check-in\n\nWhat made you smile today?\n"
    )
    dovecot.append(_mail(alice_to, outlook_en, sender=f"Alice <{ALICE}>"))
    assert _read(hearth) == 1
    dispatcher.run_once()
    reveal = _to(smtp_sink, SAM)[-1]
    assert "The walk by the river" in reveal.text()
    assert "-----Original Message-----" not in reveal.text()
    assert len(_to(smtp_sink, SAM)) == 3  # the nudge, "got your answer", the reveal
    # Alice takes texts: Sam's answer reaches her phone, without his signature.
    assert "Hearth: Sam's answer: Cocinar juntos el domingo" in texts.getvalue()
    assert "Ingeniero" not in texts.getvalue()
    with hearth.db.session() as s:
        rows = list(s.scalars(sa.select(Answer)))
        assert len(rows) == 2 and all(a.revealed_at is not None for a in rows)
        assert hearth.keys.open(rows[0].text or "") == "Cocinar juntos el domingo"


def test_the_daemon_worker_wakes_on_idle(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink, dovecot: DovecotServer
) -> None:
    """The worker waits in IMAP IDLE (polling only once an hour here): a reply delivered
    while it waits is handled at once, and a stop ends the wait."""
    h = Hearth(
        settings=make_settings(db, imap={**_imap(dovecot), "poll_seconds": 3600}),
        db=db,
        clock=clock,
    )
    cid = couple_with_partners(db, clock.now())
    add_ritual(db, clock.now(), cid, "five-minute-check-in")
    with db.session() as s:
        sam = s.scalars(sa.select(Partner).where(Partner.name == "Sam")).one()
        reply_to = reply_address.address(s, BASE, sam)
    stop, woken = threading.Event(), threading.Event()
    worker = MailboxWorker(h, stop, on_queued=woken.set)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert woken.wait(0.1) is False  # an empty mailbox: nothing handled
        _idling(dovecot)
        dovecot.append(_mail(reply_to, "HELP"))
        assert woken.wait(15), "the reply was not read while the worker waited"
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    with db.session() as s:
        (row,) = s.scalars(sa.select(Reply))
        assert (row.channel, row.action) == (Channel.EMAIL, "help sent")


QUOTE = "> Five-minute check-in at 21:00.\n> What made you smile today?\n"
CLIENTS = {
    "gmail en": ("en", f"On Mon, Jan 5, 2026 at 9:01 PM Hearth <{BASE}> wrote:\n{QUOTE}"),
    "gmail de": ("de", f"Am Mo., 5. Jan. 2026 um 21:01 Uhr schrieb Hearth <{BASE}>:\n{QUOTE}"),
    "gmail es": ("es", f"El lun, 5 ene 2026 a las 21:01, Hearth (<{BASE}>) escribió:\n{QUOTE}"),
    "apple en": (
        "en",
        f"Sent from my iPhone\n\n> On 5 Jan 2026, at 21:01, Hearth <{BASE}> wrote:\n{QUOTE}",
    ),
    "apple de": (
        "de",
        f"Von meinem iPhone gesendet\n\n> Am 05.01.2026 um 21:01 schrieb Hearth <{BASE}>:\n{QUOTE}",
    ),
    "apple es": (
        "es",
        "Enviado desde mi iPhone\n\n"
        f"> El 5 ene 2026, a las 21:01, Hearth <{BASE}> escribió:\n{QUOTE}",
    ),
    "outlook en": (
        "en",
        f"-----Original Message-----\nFrom: Hearth <{BASE}>\n"
        f"Sent: Monday, January 5, 2026 9:01 PM\nTo: Sam <{SAM}>\nSubject: Check-in\n\n"
        "What made you smile today?\n",
    ),
    "outlook de": (
        "de",
        f"Von: Hearth <{BASE}>\nGesendet: Montag, 5. Januar 2026 21:01\nAn: Sam <{SAM}>\n"
        "Betreff: Check-in\n\nWas hat dich heute zum Lächeln gebracht?\n",
    ),
    "outlook es": (
        "es",
        f"De: Hearth <{BASE}>\nEnviado: lunes, 5 de enero de 2026 21:01\nPara: Sam <{SAM}>\n"
        "Asunto: Check-in\n\n¿Qué te hizo sonreír hoy?\n",
    ),
    "signature": ("en", "-- \nSam Example\nExample Corp, +1 212 555 0123\n"),
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_only_the_new_words_of_a_reply_are_read(client: str) -> None:
    language, tail = CLIENTS[client]
    words = "The walk by the river,\nholding hands"
    assert mail_text.new_words(f"{words}\n\n{tail}", language) == words
    assert (
        mail_text.new_words(f"PAUSE 3D\r\n\r\n{tail}".replace("\n", "\r\n"), language) == "PAUSE 3D"
    )


def test_handled_mail_moves_to_the_processed_folder(
    db: Database, clock: FakeClock, dovecot: DovecotServer
) -> None:
    imap = {**_imap(dovecot), "processed_folder": "Processed"}
    h = Hearth(settings=make_settings(db, imap=imap), db=db, clock=clock)
    couple_with_partners(db, clock.now())
    with db.session() as s:
        sam = s.scalars(sa.select(Partner).where(Partner.name == "Sam")).one()
        reply_to = reply_address.address(s, BASE, sam)
    dovecot.append(_mail(reply_to, "HELP"))
    dovecot.append(_mail(BASE, "HELP"))  # no token: moved too, never read again
    assert _read(h) == 2
    assert dovecot.messages("INBOX") == []
    assert all(b"\\Seen" in flags for _uid, flags in dovecot.messages("Processed"))
    assert len(dovecot.messages("Processed")) == 2
    assert _read(h) == 0


def test_the_daemon_reads_replies_and_sends_the_answer(
    hearth: Hearth,
    clock: FakeClock,
    dispatcher: Dispatcher,
    texts: io.StringIO,
    smtp_sink: SmtpSink,
    dovecot: DovecotServer,
) -> None:
    """The real daemon (web off): its mailbox thread reads the reply while it waits in IDLE,
    and its dispatcher sends the answer to the SMTP server at once."""
    reply_to = _nudged(clock, dispatcher, smtp_sink)
    transports = {
        Channel.SMS: ConsoleTransport(Channel.SMS, texts),
        Channel.EMAIL: build_one(hearth.settings, Channel.EMAIL),
    }
    daemon = Daemon(hearth, transports=transports, web=False)
    daemon.start()
    try:
        _idling(dovecot)
        dovecot.append(_mail(reply_to, "SNOOZE 30\n\n-- \nSam"))
        deadline = time.monotonic() + 20
        while len(_to(smtp_sink, SAM)) < 2:  # waits for the daemon's threads, not for time
            assert time.monotonic() < deadline, "no answer reached the SMTP server"
            time.sleep(0.05)
    finally:
        assert daemon.stop() == 0
    (_, answer) = _to(smtp_sink, SAM)
    assert answer.text().startswith("Hearth: snoozed, we'll remind you at 9:")
    assert answer.message["Reply-To"] == reply_to


def test_while_the_database_is_away_the_mail_waits(
    hearth: Hearth,
    clock: FakeClock,
    dispatcher: Dispatcher,
    smtp_sink: SmtpSink,
    dovecot: DovecotServer,
) -> None:
    reply_to = _nudged(clock, dispatcher, smtp_sink)
    dovecot.append(_mail(reply_to, "DONE"))
    away = Database("postgresql+psycopg://postgres@127.0.0.1:1/test")  # nothing listens there
    try:
        with pytest.raises(DatabaseUnavailable):
            _read(Hearth(settings=hearth.settings, db=away, clock=clock))
    finally:
        away.dispose()
    assert [b"\\Seen" in flags for _uid, flags in dovecot.messages()] == [False]  # not lost
    assert _read(hearth) == 1  # the database is back: read, acted on, marked
    assert _done(hearth, "Sam") == 1


def test_the_text_part_is_preferred_to_the_html_part() -> None:
    msg = EmailMessage()
    msg.set_content("SKIP\n")
    msg.add_alternative("<p>DONE</p>", subtype="html")
    assert mail_text.body_text(msg).strip() == "SKIP"
    html_only = EmailMessage()
    html_only.set_content("<p>DONE</p><blockquote>STOP</blockquote>", subtype="html")
    assert mail_text.body_text(html_only) == "DONE"


@pytest.mark.parametrize(
    "value", ["hearth+x@example.org", "hearth", "hearth@localhost", "a b@example.org"]
)
def test_a_reply_address_that_cannot_take_plus_addresses_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(environ={"HEARTH_IMAP_REPLY_ADDRESS": value})
    assert "imap.reply_address" in str(exc.value)
    assert "plain address such as hearth@example.org" in str(exc.value)
