"""Hearth in English, German and Spanish: complete catalogs, CLDR formats, SMS segment limits,
keyed prompt pools, replies in the partner's words, the language setting, pages and feeds."""

from __future__ import annotations

import re
import string
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from icalendar import Calendar

from service.calendar import feed_tokens
from service.channels.segments import gsm_only, segments
from service.core import i18n
from service.core.clock import FakeClock
from service.core.config import DefaultsSettings
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import ConsentState, Partner, Reminder, ReminderPurpose, Ritual, RitualKind
from service.domain import couples, partners, prompts, wording
from service.domain import unsubscribe as links
from service.domain.templates import TEMPLATES
from service.outbox import texts
from service.replies import inbound, pausing, repair, vocabulary
from tests.conftest import Cli, make_settings, snapshot
from tests.factories import check_in_sent, couple_with_partners
from tests.web import serve

ROOT = Path(__file__).resolve().parent.parent
TRANSLATED = [code for code in i18n.LANGUAGES if code != i18n.DEFAULT]
# Thursday 24 December 2026, 21:00 in Berlin
EVE = datetime(2026, 12, 24, 20, 0, tzinfo=UTC)
_PERCENT = re.compile(r"%\((\w+)\)s")


def _source_ids() -> set[str]:
    """Every message in the code and the page's templates, extracted as ``make catalogs``
    does (service/locale/babel.cfg)."""
    found = set()
    jinja = {"extensions": "jinja2.ext.i18n", "trim_blocks": "True", "lstrip_blocks": "True"}
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(ROOT),
        method_map=[("service/**.py", "python"), ("service/web/templates/**.html", "jinja2")],
        options_map={"service/web/templates/**.html": jinja},
        keywords={"_": None, "N_": None, "ngettext": (1, 2)},
    ):
        found.add(message[0] if isinstance(message, tuple) else message)
    return found


def _catalog(code: str):  # type: ignore[no-untyped-def]
    with i18n.po_path(code).open("rb") as f:
        return read_po(f, locale=code)


def _fields(text: str) -> set[str]:
    """``{name}`` (str.format, the code's) and ``%(name)s`` (the templates') placeholders."""
    if _PERCENT.search(text):
        return set(_PERCENT.findall(text))
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


@pytest.mark.parametrize("code", i18n.LANGUAGES)
def test_every_catalog_has_every_message_translated_and_none_fuzzy(code: str) -> None:
    catalog = _catalog(code)
    assert not catalog.fuzzy, f"{code}: the catalog header is fuzzy"
    ids = {m.id[0] if isinstance(m.id, tuple) else m.id: m for m in catalog if m.id}
    missing = _source_ids() - set(ids)
    assert not missing, f"{code} lacks {sorted(missing)} (make catalogs, then translate)"
    for msgid, m in ids.items():
        assert not m.fuzzy, f"{code}: fuzzy {msgid!r}"
        strings = m.string if isinstance(m.string, tuple) else (m.string,)
        assert len(strings) == (catalog.num_plurals if m.pluralizable else 1), msgid
        assert all(strings), f"{code}: untranslated {msgid!r}"
        for s in strings:  # a placeholder lost or misspelt would raise KeyError when sent
            assert _fields(s) == _fields(msgid), f"{code}: {s!r} vs {msgid!r}"
    assert not list(catalog.check()), f"{code}: {list(catalog.check())}"


def test_the_template_is_what_the_code_says() -> None:
    with (ROOT / "service/locale/hearth.pot").open("rb") as f:
        template = {m.id[0] if isinstance(m.id, tuple) else m.id for m in read_po(f) if m.id}
    assert template == _source_ids(), "service/locale/hearth.pot is stale: make catalogs"


def test_without_a_compiled_catalog_the_po_is_compiled_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh clone run without ``make`` has no .mo (an edited .po a stale one)."""
    de = tmp_path / "de" / "LC_MESSAGES"
    de.mkdir(parents=True)
    (de / "hearth.po").write_bytes(i18n.po_path("de").read_bytes())
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    i18n.translations.cache_clear()
    try:
        assert not (de / "hearth.mo").exists()
        assert i18n.translations("de").gettext(texts.SMS_HINTS).startswith("Antworte FERTIG")
    finally:
        i18n.translations.cache_clear()


def test_times_and_dates_follow_each_locale() -> None:
    berlin = EVE.astimezone(ZoneInfo("Europe/Berlin"))
    new_york = EVE.astimezone(ZoneInfo("America/New_York"))
    de, en, es = i18n.lang("de"), i18n.lang("en"), i18n.lang("es")
    assert (de.time(berlin), en.time(new_york), es.time(berlin)) == ("21:00", "3:00 PM", "21:00")
    assert (de.day(berlin), en.day(berlin), es.day(berlin)) == (
        "Do., 24. Dez.",
        "Thu, Dec 24",
        "jue, 24 dic",
    )
    assert de.day_time(berlin) == "Do., 24. Dez., 21:00"
    assert (de.weekday(berlin), es.weekday(berlin)) == ("Donnerstag", "jueves")
    assert (de.number(1.5), en.number(1.5), es.number(1.5)) == ("1,5", "1.5", "1,5")
    assert en.time(new_york).isascii()  # CLDR's narrow no-break space would force UCS-2


def test_plural_forms_follow_the_number() -> None:
    de, en, es = i18n.lang("de"), i18n.lang("en"), i18n.lang("es")
    assert "next 1 hour." in repair.no_slot_text(1, en)
    assert "next 48 hours." in repair.no_slot_text(48, en)
    assert "in der nächsten 1 Stunde " in repair.no_slot_text(1, de)
    assert "in den nächsten 1,5 Stunden " in repair.no_slot_text(1.5, de)
    assert "en las siguientes 48 horas." in repair.no_slot_text(48, es)


def _ctx(
    code: str,
    purpose: ReminderPurpose,
    kind: RitualKind,
    title: str,
    full: bool,
    prompt: str | None,
) -> texts.Context:
    ritual = Ritual(
        kind=kind,
        title=title,
        description=wording.GUIDE,
        start_time=time(21, 0),
        timezone="Europe/Berlin",
    )
    partner = Partner(name="P", timezone="Europe/Berlin", language=code, full_text=full)
    return texts.Context(ritual, partner, purpose, EVE, prompt, "https://h.example/u/x")


LONG = "Unser Sonntagsspaziergang am Fluss mit Gesprächen über alles, was uns bewegt"


@pytest.mark.parametrize("code", i18n.LANGUAGES)
@pytest.mark.parametrize("purpose", [p for p in ReminderPurpose if p is not ReminderPurpose.NOTICE])
@pytest.mark.parametrize("full", [False, True])
def test_every_sms_renders_within_two_segments_with_its_hints(
    code: str, purpose: ReminderPurpose, full: bool
) -> None:
    t = i18n.lang(code)
    talk = purpose in (ReminderPurpose.INVITE, ReminderPurpose.FOLLOWUP)
    kind = RitualKind.REPAIR if talk else RitualKind.GRATITUDE
    longest = max(prompts.builtin_pool(kind), key=lambda p: len(prompts.localized(kind, p, code)))
    for title in ("Walk", LONG, wording.REPAIR_TITLE):
        text = texts.sms_text(_ctx(code, purpose, kind, title, full, longest))
        assert segments(text) <= 2, text
        if purpose in (ReminderPurpose.NUDGE, ReminderPurpose.SNOOZE):
            assert text.endswith(texts.sms_hints(t)) and "STOP" in text
            assert t.time(EVE.astimezone(ZoneInfo("Europe/Berlin"))) in text
        if purpose is ReminderPurpose.CHASE:
            assert "STOP" in text


# The longest values the fixed texts' placeholders take (a couple's name is cut at 40).
_NAME = "Alexandra & Maximilian von Hohenzollern."
_URL = "https://hearth.example.org/page/" + "x" * 43


def _sample(t: i18n.Lang) -> dict[str, str]:
    berlin = EVE.astimezone(ZoneInfo("Europe/Berlin"))
    return {
        "time": "12:59 PM",
        "when": t.day_time(berlin),
        "minutes": "30",
        "hours": "48",
        "name": _NAME,
        "title": wording.title(_template_ritual(), t),
        "day": t.day(berlin),
        "until": t.day_time(berlin),
        "url": _URL,
        "link": _URL.split("/page/", 1)[0] + "/page/from-email/12345.1." + "x" * 32,
        "word": "AUSLASSEN",
        "mood": "4",
        "days": "60",
    }


def _template_ritual() -> Ritual:
    tpl = TEMPLATES["five-minute-check-in"]
    return Ritual(kind=tpl.kind, template=tpl.name, title=tpl.title, description=tpl.description)


@pytest.mark.parametrize("code", i18n.LANGUAGES)
def test_every_fixed_sms_fits_in_two_segments(code: str) -> None:
    """Replies and notices have no title to shorten: each must fit as written, with the
    longest values its placeholders take. Every "Hearth:" text is checked: a new
    placeholder needs a sample here."""
    t = i18n.lang(code)
    sample = _sample(t)
    catalog = _catalog(code)
    checked = 0
    for m in catalog:
        msgid = m.id[0] if isinstance(m.id, tuple) else m.id
        if not msgid.startswith("Hearth:") or "guide" in _fields(msgid):
            continue  # the invitation is fitted around its guide (the test above)
        assert _fields(msgid) <= set(sample), f"no sample for {_fields(msgid) - set(sample)}"
        for s in m.string if isinstance(m.string, tuple) else (m.string,):
            text = (s or msgid).format(**sample)
            assert segments(text) <= 2, f"{code}: {text!r}"
            checked += 1
    assert checked >= 50


@pytest.mark.parametrize("code", i18n.LANGUAGES)
def test_help_is_one_gsm_segment_and_names_the_partners_own_words(code: str) -> None:
    t = i18n.lang(code)
    help_text = t._(inbound.HELP_TEXT)
    assert gsm_only(help_text) == help_text and segments(help_text) == 1, help_text
    for command in ("DONE", "SKIP", "SNOOZE", "PAUSE", "RESUME", "REPAIR", "LINK"):
        word = vocabulary.KEYWORDS[command][code][0]
        assert word in help_text, (code, word)
        assert inbound.parse(word, code).keyword == command  # what HELP names works


def test_texts_prefer_gsm7_where_they_read_naturally() -> None:
    """German umlauts and ß are GSM-7, so German texts cost GSM-7 rates; the Spanish fixed
    texts avoid á, í, ó, ú (outside GSM-7) except where Spanish needs them."""
    needs_accents = {pausing.TOO_LONG}  # "días"
    for code in ("de", "es"):
        t = i18n.lang(code)
        hints = texts.sms_hints(t)
        assert gsm_only(hints) == hints, hints
        for m in _catalog(code):
            if isinstance(m.id, str) and m.id.startswith("Hearth:") and m.id not in needs_accents:
                assert gsm_only(t._(m.id)) == t._(m.id), t._(m.id)


@pytest.mark.parametrize("kind", list(RitualKind))
def test_each_language_has_the_same_keyed_prompts(kind: RitualKind) -> None:
    source = prompts.keyed_pool(kind)
    assert len(source) >= 18
    for code in TRANSLATED:
        pool = prompts.keyed_pool(kind, code)
        assert pool.keys() == source.keys(), f"{code}/{kind.value}.toml keys differ"
        for key, text in pool.items():
            assert 3 <= len(text) <= prompts.MAX_LENGTH, (code, key)
            assert text != source[key], f"{code}/{kind.value}.toml: {key} is not translated"
        assert len(set(pool.values())) == len(pool)
    first = next(iter(source.values()))
    assert prompts.localized(kind, first, "en") == first
    assert prompts.localized(kind, "An admin's own prompt", "de") == "An admin's own prompt"


def test_keywords_in_each_language_and_the_carrier_words_in_all() -> None:
    p = inbound.parse
    assert p("fertig", "de").keyword == "DONE" and p("Erledigt!", "de").keyword == "DONE"
    assert p("später 20", "de") == inbound.Parsed("SNOOZE", "20")
    assert p("SPAETER 1 Std", "de") == inbound.Parsed("SNOOZE", "1 STD")
    assert p("¡Listo!", "es").keyword == "DONE" and p("posponer 15", "es").argument == "15"
    assert p("hablar", "es").keyword == "REPAIR" and p("reden", "de").keyword == "REPAIR"
    assert p("DONE", "de").keyword == "DONE"  # English works for everyone
    assert p("fertig", "en").keyword is None  # another language's word is just text
    assert p("fertig mit der Arbeit", "de").keyword is None  # a sentence, not a keyword
    for code in i18n.LANGUAGES:
        assert p("STOP", code).keyword == "STOP" and p("start", code).keyword == "START"
        assert p("Help", code).keyword == "HELP"
    assert p("Hilfe", "de").keyword == "HILFE" and p("ayuda", "es").keyword == "AYUDA"
    assert p("Stopp", "es").keyword == "STOPP"  # the carrier words work in every language
    for command, by_language in inbound.KEYWORDS.items():
        assert set(by_language) == set(i18n.LANGUAGES), command
    # The conversations' commands too: PAUSE/RESUME, the opt-in's YES, LINK.
    assert p("Pause bis Sonntag", "de") == inbound.Parsed("PAUSE", "BIS SONNTAG")
    assert p("pausa 3 días", "es") == inbound.Parsed("PAUSE", "3 DIAS")
    assert p("weiter", "de").keyword == "RESUME" and p("Seguir", "es").keyword == "RESUME"
    assert p("Ja", "de").keyword == "YES" and p("Sí", "es").keyword == "YES"
    assert p("si", "es").keyword == "YES" and p("ja", "en").keyword is None
    assert p("Seite", "de").keyword == "LINK" and p("enlace", "es").keyword == "LINK"
    assert p("link", "es").keyword == "LINK" and p("nein", "de").keyword == "NO"
    assert p("Spater 10", "de") == inbound.Parsed("SNOOZE", "10")  # no umlaut on the keyboard


@pytest.mark.parametrize(
    ("arg", "language", "day"),
    [
        ("3 TAGE", "de", date(2026, 1, 8)),
        ("2 WOCHEN", "de", date(2026, 1, 19)),
        ("3 DIAS", "es", date(2026, 1, 8)),
        ("1 SEMANA", "es", date(2026, 1, 12)),
        ("BIS SONNTAG", "de", date(2026, 1, 11)),
        ("BIS SO", "de", date(2026, 1, 11)),
        ("BIS DO", "de", date(2026, 1, 8)),  # Donnerstag
        ("HASTA EL DOMINGO", "es", date(2026, 1, 11)),
        ("HASTA DO", "es", date(2026, 1, 11)),  # domingo
        ("HASTA EL MIERCOLES", "es", date(2026, 1, 7)),
        ("BIS MORGEN", "de", date(2026, 1, 6)),
        ("HASTA MANANA", "es", date(2026, 1, 6)),
        ("BIS 24.12.", "de", date(2026, 12, 24)),
        ("BIS ZUM 24. DEZEMBER", "de", date(2026, 12, 24)),
        ("BIS 3. MAERZ", "de", date(2026, 3, 3)),
        ("HASTA EL 24 DE DICIEMBRE", "es", date(2026, 12, 24)),
        ("HASTA 24/12/2026", "es", date(2026, 12, 24)),
        ("UNTIL SUNDAY", "de", date(2026, 1, 11)),  # English works for everyone
        ("UNTIL DEC 24", "es", date(2026, 12, 24)),
    ],
)
def test_pause_lengths_and_dates_in_each_language(arg: str, language: str, day: date) -> None:
    monday = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    end = pausing.until(arg, monday, "Europe/Berlin", language)
    assert end is not None, arg
    local = end.astimezone(ZoneInfo("Europe/Berlin"))
    assert local.date() == day, arg


def test_pause_words_of_another_language_are_not_read() -> None:
    monday = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    assert pausing.until("BIS SONNTAG", monday, "Europe/Berlin", "en") is None
    assert pausing.until("UNTIL 24.12.", monday, "Europe/Berlin", "en") is None  # 12/24? 24/12?


def test_a_german_partner_is_answered_in_german(hearth: Hearth) -> None:
    check_in_sent(hearth)
    now = hearth.clock.now()
    with hearth.db.session() as s:
        alice = s.scalars(sa.select(Partner).where(Partner.name == "Alice")).one()
        partners.edit(s, now, alice, language="de")
        assert inbound.handle(hearth, s, now, alice, "Hilfe", "SM1") == (
            i18n.lang("de")._(inbound.HELP_TEXT)
        )
        answer = inbound.handle(hearth, s, now, alice, "später 20", "SM2") or ""
        assert answer.startswith("Hearth: verschoben, wir erinnern dich um 21:")
        done = inbound.handle(hearth, s, now, alice, "FERTIG", "SM3") or ""
        assert done == "Hearth: schön, Fünf-Minuten-Check-in ist als erledigt markiert."
        assert inbound.handle(hearth, s, now, alice, "FERTIK", "SM4") == (
            "Hearth: meintest du FERTIG? HILFE zeigt alle Antworten."
        )
        assert inbound.handle(hearth, s, now, alice, "STOP", "SM5") == (
            "Hearth: du bekommst keine SMS mehr. Antworte START, um dich wieder anzumelden."
        )


def test_a_pause_by_text_is_answered_and_told_each_in_their_language(hearth: Hearth) -> None:
    check_in_sent(hearth)
    now = hearth.clock.now()
    with hearth.db.session() as s:
        alice, sam = (partners.resolve(s, n) for n in ("Alice", "Sam"))
        partners.edit(s, now, alice, language="de")
        partners.edit(s, now, sam, language="es")
        answer = inbound.handle(hearth, s, now, alice, "Pause bis Sonntag", "SM1") or ""
        assert answer == (
            "Hearth: pausiert bis So., 11. Jan., 00:00; dein Gegenüber weiß Bescheid. "
            "Antworte WEITER, um früher wieder anzufangen."
        )
        assert _messages(hearth, s, sam) == [
            "Hearth: Alice ha pausado vuestros rituales hasta el dom, 11 ene, 0:00. "
            "Responde SEGUIR para volver antes."
        ]
        assert inbound.handle(hearth, s, now, alice, "weiter", "SM2") == (
            "Hearth: willkommen zurück, eure Rituale laufen wieder."
        )
        assert _messages(hearth, s, sam)[-1] == "Hearth: Alice ha reactivado vuestros rituales."


def _messages(hearth: Hearth, s: Any, to: Partner) -> list[str]:
    rows = s.scalars(
        sa.select(Reminder.body)
        .where(Reminder.partner_id == to.id, Reminder.purpose == ReminderPurpose.MESSAGE)
        .order_by(Reminder.id)
    )
    return [hearth.keys.open(b or "") for b in rows]


def test_the_opt_in_asks_and_answers_in_the_partners_language(run: Cli, hearth: Hearth) -> None:
    run.ok("couple", "add", "Lucía & Tom", "--timezone", "Europe/Madrid")
    run.ok("partner", "add", "Lucía & Tom", "Lucía", "--phone", "+34612345678", "--language", "es")
    with hearth.db.session() as s:
        lucia = partners.resolve(s, "Lucía")
        [body] = s.scalars(
            sa.select(Reminder.body).where(Reminder.purpose == ReminderPurpose.CONFIRM)
        )
        assert body == (
            "Hearth: recordatorios de los rituales de pareja de Lucía & Tom. Frecuencia "
            "variable, normalmente 1 o 2 diarios. Pueden aplicarse tarifas de SMS y datos. "
            "Responde AYUDA para ayuda, STOP para darte de baja. Responde SI para empezar."
        )
        now = hearth.clock.now()
        assert inbound.handle(hearth, s, now, lucia, "Sí", "SM1") == (
            "Hearth: hecho, gracias por unirte. Responde AYUDA para ver lo que puedes "
            "escribir, STOP para darte de baja."
        )
        assert lucia.sms_consent is ConsentState.CONSENTED


def test_partner_language_from_the_cli_and_the_default(run: Cli, hearth: Hearth) -> None:
    run.ok("couple", "add", "Jana & Mike", "--timezone", "Europe/Berlin")
    run.ok("partner", "add", "Jana & Mike", "Jana", "--email", "j@example.de", "--language", "DE")
    run.ok("partner", "add", "Jana & Mike", "Mike", "--email", "m@example.com")
    shown = run.ok("partner", "show", "Jana", "--json").output
    assert '"language": "de"' in shown
    assert '"language": "en"' in run.ok("partner", "show", "Mike", "--json").output
    before = snapshot(hearth.db)
    bad = run("partner", "edit", "Mike", "--language", "fr")
    assert bad.exit_code == 2
    assert bad.output.strip().splitlines()[-1].endswith("must be one of en, de, es)")
    assert "language: unknown language 'fr'" in bad.output
    assert snapshot(hearth.db) == before
    run.ok("partner", "edit", "Mike", "--language", "es")
    assert '"language": "es"' in run.ok("partner", "show", "Mike", "--json").output


def test_the_default_language_setting_is_validated() -> None:
    assert DefaultsSettings(language="ES").language == "es"
    with pytest.raises(ValueError, match="must be one of en, de, es"):
        DefaultsSettings(language="klingon")


def _talk(cal: Calendar) -> Any:
    [talk] = [e for e in cal.walk("VEVENT") if "repair" in str(e["categories"].to_ical())]
    return talk


def test_feeds_and_unsubscribe_pages_speak_their_holders_language(hearth: Hearth) -> None:
    now = hearth.clock.now()
    cid = couple_with_partners(hearth.db, now)
    with hearth.db.session() as s:
        couple = couples.resolve(s, cid)
        alice, sam = sorted(couple.partners, key=lambda p: p.name)
        partners.edit(s, now, alice, language="de")
        repair.request(s, now, couple, alice, "sms", at=now.replace(year=now.year + 1))
        req = repair.get(s, 1)
        repair.schedule(hearth, s, req, now)
        tokens = {p.name: feed_tokens.issue(s, now, p) for p in (alice, sam)}
        unsub = {p.name: links.token(s, p) for p in (alice, sam)}
    with serve(hearth) as base, httpx.Client(base_url=base) as http:
        for _ in range(2):  # built, then from the cache: neither language evicts the other
            de = Calendar.from_ical(http.get(f"/feeds/{tokens['Alice']}.ics").content)
            en = Calendar.from_ical(http.get(f"/feeds/{tokens['Sam']}.ics").content)
            assert str(de["x-wr-calname"]) == "Alice & Sam — Rituale"
            assert str(en["x-wr-calname"]) == "Alice & Sam — rituals"
            de_talk, en_talk = _talk(de), _talk(en)
            assert str(de_talk["summary"]) == "Klärungsgespräch"
            assert str(de_talk["description"]).startswith("So sprecht ihr es durch:")
            assert str(en_talk["summary"]) == "Repair conversation"
            assert str(en_talk["description"]) == wording.GUIDE
        page = http.get(f"/unsubscribe/{unsub['Alice']}")
        assert '<html lang="de">' in page.text
        assert "Die Erinnerungs-E-Mails von Hearth für Alice abbestellen?" in page.text
        assert ">Abbestellen</button>" in page.text
        sams = http.get(f"/unsubscribe/{unsub['Sam']}").text
        assert "Stop Hearth's reminder emails for Sam?" in sams
        done = http.post(
            f"/unsubscribe/{unsub['Alice']}",
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert "Du bekommst keine E-Mails mehr von Hearth." in done.text


def test_a_templates_words_are_translated_until_the_couple_changes_them() -> None:
    de = i18n.lang("de")
    tpl = TEMPLATES["five-minute-check-in"]
    ritual = Ritual(kind=tpl.kind, template=tpl.name, title=tpl.title, description=tpl.description)
    assert wording.title(ritual, de) == "Fünf-Minuten-Check-in"
    assert (wording.description(ritual, de) or "").startswith("Jeder erzählt")
    ritual.title, ritual.description = "Unser Abendritual", "Mit Tee auf dem Balkon."
    assert wording.title(ritual, de) == "Unser Abendritual"  # their words, in any language
    assert wording.description(ritual, de) == "Mit Tee auf dem Balkon."
    custom = Ritual(kind=RitualKind.CUSTOM, template=None, title="Anniversary", description="")
    assert wording.title(custom, de) == "Anniversary"  # not a template's: not Hearth's words


def test_a_partner_added_without_a_language_gets_the_configured_default(
    sqlite_db: Database, clock: FakeClock
) -> None:
    german = Hearth(
        settings=make_settings(sqlite_db, defaults={"language": "de"}), db=sqlite_db, clock=clock
    )
    run = Cli(german)
    run.ok("couple", "add", "Jana & Mike", "--timezone", "Europe/Berlin")
    run.ok("partner", "add", "Jana & Mike", "Jana", "--email", "j@example.de")
    run.ok("partner", "add", "Jana & Mike", "Mike", "--email", "m@example.com", "--language", "en")
    with sqlite_db.session() as s:
        languages = dict(s.execute(sa.select(Partner.name, Partner.language)).all())
    assert languages == {"Jana": "de", "Mike": "en"}


_EXAMPLES = {
    "de": ("PAUSE 3T", "PAUSE BIS SO", "PAUSE BIS 24.12.2026", "SPÄTER 30", "WEITER"),
    "es": ("PAUSA 3D", "PAUSA HASTA DOMINGO", "PAUSA HASTA 24/12/2026", "POSPONER 30", "SEGUIR"),
}


@pytest.mark.parametrize(("code", "examples"), _EXAMPLES.items())
def test_the_examples_the_texts_give_work(code: str, examples: tuple[str, ...]) -> None:
    """What HELP and the PAUSE answers tell a partner to text is understood as told."""
    t = i18n.lang(code)
    told = t._(inbound.HELP_TEXT) + t._(pausing.BAD) + t._(pausing.PAST)
    monday = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    for example in examples:
        assert example in told, example
        parsed = inbound.parse(example, code)
        assert parsed.keyword is not None, example
        if parsed.keyword == "PAUSE":
            assert pausing.until(parsed.argument, monday, "Europe/Berlin", code), example
