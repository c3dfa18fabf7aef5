"""One occurrence, two languages: a couple with a German and an American partner, through
the real channels' stand-ins (the twilio client over HTTP to the Twilio stand-in, SMTP to
aiosmtpd), on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import sqlalchemy as sa

from service.channels import build
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Channel, Partner, Prompt, Reminder, RitualKind
from service.domain import couples, partners, prompts
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from tests import peers
from tests.conftest import make_settings
from tests.factories import add_ritual
from tests.peers.smtp_sink import SmtpSink
from tests.peers.twilio_standin import TwilioStandIn, num_segments

TONIGHT = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)  # 21:00 in Berlin, 3:00 PM in New York
JANA, MIKE = "+4915123456789", "+12125550123"


def _couple(db: Database, now: datetime) -> None:
    with db.session() as s:
        c = couples.add(s, now, name="Jana & Mike", timezone="Europe/Berlin")
        for name, phone, email, tz, language in (
            ("Jana", JANA, "jana@example.de", None, "de"),
            ("Mike", MIKE, "mike@example.com", "America/New_York", "en"),
        ):
            partners.add(
                s,
                now,
                c,
                name=name,
                phone=phone,
                email=email,
                timezone=tz,
                channels="sms,email",
                quiet_hours=None,
                sms_consent="signup form",
                language=language,
                full_text=True,  # the title and prompt, translated
                both_channels=True,  # the texts of both channels are compared here
            )
        cid = c.id
    add_ritual(db, now, cid, "five-minute-check-in")
    planner.plan(db.write_engine, now, timedelta(hours=48), 30)


def _part(mail: EmailMessage, kind: str) -> str:
    part = mail.get_body((kind,))
    assert part is not None
    return str(part.get_content())


def test_one_occurrence_reaches_each_partner_in_their_language_and_clock(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    _couple(db, clock.now())
    settings = make_settings(db, **peers.sections(twilio_standin, smtp_sink))
    hearth = Hearth(settings=settings, db=db, clock=clock)
    d = Dispatcher(hearth, build(settings), rng=random.Random(3))
    clock.set(TONIGHT)
    assert d.run_once().sent == 4

    sms = {m.to: m.body or "" for m in twilio_standin.sent}
    assert set(sms) == {JANA, MIKE}
    german, english = sms[JANA], sms[MIKE]
    assert german.startswith("Hearth: Fünf-Minuten-Check-in um 21:00. ")
    # Both take part by text: the check-in asks its prompt as the shared question.
    assert german.endswith(
        "Schreib deine Antwort zurück: Die deines Gegenübers siehst du, sobald ihr beide "
        "geantwortet habt. STOP zum Abmelden."
    )
    assert english.startswith("Hearth: Five-minute check-in at 3:00 PM. ")
    assert english.endswith(
        "Reply with your answer: you'll see your partner's once you both have. STOP to opt out."
    )
    assert "PM" not in german and "21:00" not in english
    assert all(num_segments(body) <= 2 for body in sms.values())  # as the stand-in counts

    # The same prompt for both, each in their own language.
    with db.session() as s:
        tonight = sa.select(Reminder.prompt_id).where(Reminder.occurrence_start == TONIGHT)
        [prompt_id] = set(s.scalars(tonight))
        prompt = s.get(Prompt, prompt_id)
        assert prompt is not None
        source = prompt.text
    assert source in english
    in_german = prompts.localized(RitualKind.CHECK_IN, source, "de")
    assert in_german != source and in_german in german

    mails = {m.rcpt_tos[0]: m.message for m in smtp_sink.messages}
    de_mail, en_mail = mails["jana@example.de"], mails["mike@example.com"]
    assert de_mail["Subject"] == "Fünf-Minuten-Check-in um 21:00"
    assert en_mail["Subject"] == "Five-minute check-in at 3:00 PM"
    de_text, en_text = _part(de_mail, "plain"), _part(en_mail, "plain")
    assert in_german in de_text and "Diese E-Mails abbestellen: https://" in de_text
    assert "Antworte per SMS: Sobald ihr beide geantwortet habt" in de_text
    assert "Deine eigene Seite (Pause, Ruhezeit, Kalender): https://" in de_text
    assert source in en_text and "Stop these emails: https://" in en_text
    de_html = _part(de_mail, "html")
    assert '<html lang="de">' in de_html and "Diese E-Mails abbestellen</a>" in de_html
    with db.session() as s:
        stored = dict(
            s.execute(
                sa.select(Partner.name, Reminder.body)
                .join(Partner, Partner.id == Reminder.partner_id)
                .where(Reminder.channel == Channel.SMS, Reminder.occurrence_start == TONIGHT)
            ).all()
        )
    assert stored == {"Jana": german, "Mike": english}  # what went out is what is kept
