"""``hearth couple import``: bring a practice's couples in at once, all or nothing.

Two formats. **CSV** (a header row naming some of :data:`CSV_COLUMNS`; one row per partner, the
couple's fields repeated or left empty on its later rows; ``rituals`` like
``five-minute-check-in@21:30;gratitude-three``)::

    couple,timezone,partner,phone,language,sms_consent,rituals
    Ana & Ben,Europe/Berlin,Ana,+4915112345678,de,signup form,gratitude-three
    Ana & Ben,,Ben,+4915187654321,en,signup form,

**JSON lines** (one couple per line)::

    {"couple": "Ana & Ben", "timezone": "Europe/Berlin",
     "partners": [{"name": "Ana", "phone": "+4915112345678", "sms_consent": "signup form"}],
     "rituals": ["gratitude-three", {"template": "date-night", "at": "20:00", "remind": "0,60"}]}

Every couple goes through the same domain functions as ``couple add``, ``partner add`` and
``ritual add`` (the same validation, events and consent records), each in a savepoint, so one
bad couple does not hide the next: every bad row is named with its line number, and nothing
is kept unless every row is good.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from service.core.exceptions import HearthError, InvalidInput
from service.domain import couples, partners, rituals

# A file larger than this is refused before it is read (an import of 100,000 couples in
# JSON lines is about 40 MB).
MAX_BYTES = 256 * 1024 * 1024
CSV_COLUMNS = (
    "couple",
    "timezone",
    "partner",
    "phone",
    "email",
    "partner_timezone",
    "language",
    "channels",
    "sms_consent",
    "quiet",
    "both_channels",
    "rituals",
)
_PARTNER_KEYS = {
    "name",
    "phone",
    "email",
    "timezone",
    "language",
    "channels",
    "sms_consent",
    "quiet",
    "both_channels",
    "full_text",
}
_RITUAL_KEYS = {"template", *rituals.RitualSpec.__dataclass_fields__}


class ImportRejected(HearthError):
    """Rows that cannot be imported; nothing was. ``problems``: one line each."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} bad row(s), nothing imported; first: {problems[0]}")


@dataclass
class PartnerRow:
    line: int
    fields: dict[str, Any]


@dataclass
class CoupleRow:
    line: int
    name: str
    timezone: str
    partners: list[PartnerRow] = field(default_factory=list)
    rituals: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


@dataclass
class Imported:
    couples: int = 0
    partners: int = 0
    rituals: int = 0
    couple_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {"couples": self.couples, "partners": self.partners, "rituals": self.rituals}


def _quote(value: Any, limit: int = 40) -> str:
    """A value as a message quotes it, cut short (a row may hold anything)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _names(values: list[str], most: int = 3) -> str:
    shown = ", ".join(_quote(v) for v in values[:most])
    return shown + (f" and {len(values) - most} more" if len(values) > most else "")


def detect(name: str, text: str) -> str:
    """``csv`` or ``jsonl``, by the file's name, else its first character."""
    lower = name.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def _flag(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value or "").strip().lower()
    if text in ("", "0", "false", "no"):
        return False
    if text in ("1", "true", "yes"):
        return True
    raise ValueError(f"{where}: {_quote(value)} is not yes or no")


def _ritual_entry(item: Any) -> dict[str, Any]:
    """A ritual: "template", "template@21:30", or an object of RitualSpec fields."""
    if isinstance(item, str):
        name, _, at = item.strip().partition("@")
        return {"template": name.strip(), **({"at": at.strip()} if at else {})}
    if isinstance(item, dict):
        unknown = set(item) - _RITUAL_KEYS
        if unknown:
            raise ValueError(f"ritual: unknown field(s) {_names(sorted(unknown))}")
        return {k: str(v) if v is not None and k != "template" else v for k, v in item.items()}
    raise ValueError("ritual: must be a template name or an object")


def parse_csv(text: str) -> tuple[list[CoupleRow], list[str]]:
    rows, problems = [], []
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in ("couple", "partner") if c not in header]
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if missing or unknown:
        what = [f"missing column(s) {', '.join(missing)}"] if missing else []
        what += [f"unknown column(s) {_names(unknown)}"] if unknown else []
        return [], [f"line 1: {'; '.join(what)} (see docs/operations.md, Importing a practice)"]
    by_name: dict[str, CoupleRow] = {}
    start = 2
    for raw in reader:
        line = start
        start = reader.line_num + 1
        try:
            if None in raw:
                raise ValueError("more fields than the header has")
            cell = {k: (v or "").strip() for k, v in raw.items() if k is not None}
            name = cell.get("couple", "")
            if not name:
                raise ValueError("couple: empty")
            couple = by_name.get(name)
            if couple is None:
                couple = by_name[name] = CoupleRow(line, name, cell.get("timezone", ""))
                rows.append(couple)
            elif cell.get("timezone") and cell["timezone"] != couple.timezone:
                raise ValueError(
                    f"timezone: {_quote(cell['timezone'])} differs from line {couple.line}'s"
                )
            if cell.get("rituals"):
                if couple.rituals:
                    raise ValueError(f"rituals: already given on line {couple.rituals[0][0]}")
                for part in cell["rituals"].split(";"):
                    if part.strip():
                        couple.rituals.append((line, _ritual_entry(part)))
            fields = {
                "name": cell.get("partner", ""),
                "phone": cell.get("phone") or None,
                "email": cell.get("email") or None,
                "timezone": cell.get("partner_timezone") or None,
                "language": cell.get("language") or None,
                "channels": cell.get("channels") or None,
                "sms_consent": cell.get("sms_consent") or None,
                "quiet": cell.get("quiet") or None,
                "both_channels": _flag(cell.get("both_channels"), "both_channels"),
            }
            couple.partners.append(PartnerRow(line, fields))
        except ValueError as exc:
            problems.append(f"line {line}: {exc}")
    return rows, problems


def parse_jsonl(text: str) -> tuple[list[CoupleRow], list[str]]:
    rows, problems = [], []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not JSON ({exc.msg}, column {exc.colno})") from None
            if not isinstance(data, dict):
                raise ValueError("must be an object with couple, timezone, partners, rituals")
            unknown = set(data) - {"couple", "timezone", "partners", "rituals"}
            if unknown:
                raise ValueError(f"unknown field(s) {_names(sorted(unknown))}")
            couple = CoupleRow(line, str(data.get("couple") or ""), str(data.get("timezone") or ""))
            people = data.get("partners") or []
            if not isinstance(people, list):
                raise ValueError("partners: must be a list")
            for p in people:
                if not isinstance(p, dict):
                    raise ValueError("partners: each must be an object")
                bad = set(p) - _PARTNER_KEYS
                if bad:
                    raise ValueError(f"partner: unknown field(s) {_names(sorted(bad))}")
                fields: dict[str, Any] = {
                    k: (str(v) if v is not None else None) for k, v in p.items()
                }
                fields["both_channels"] = _flag(p.get("both_channels"), "both_channels")
                if "full_text" in p:
                    fields["full_text"] = _flag(p.get("full_text"), "full_text")
                couple.partners.append(PartnerRow(line, fields))
            for item in data.get("rituals") or []:
                couple.rituals.append((line, _ritual_entry(item)))
            rows.append(couple)
        except ValueError as exc:
            problems.append(f"line {line}: {exc}")
    return rows, problems


def parse(text: str, fmt: str) -> list[CoupleRow]:
    """The couples of an import file (``fmt``: csv or jsonl); every unreadable row named."""
    rows, problems = (parse_csv if fmt == "csv" else parse_jsonl)(text)
    if problems:
        raise ImportRejected(problems)
    if not rows:
        raise ImportRejected(["line 1: no couples in the file"])
    return rows


def apply(
    session: Session, now: datetime, rows: list[CoupleRow], region: str, language: str
) -> Imported:
    """Create every couple of ``rows`` in the session's transaction; raise
    :class:`ImportRejected` naming every bad row (the caller's transaction then rolls back)."""
    done, problems = Imported(), []
    for row in rows:
        line = row.line
        try:
            with session.begin_nested():
                c = couples.add(session, now, name=row.name, timezone=row.timezone)
                if not row.partners:
                    raise InvalidInput("partners", "a couple needs at least one partner")
                for p in row.partners:
                    line = p.line
                    f = dict(p.fields)
                    partners.add(
                        session,
                        now,
                        c,
                        name=f.get("name") or "",
                        phone=f.get("phone"),
                        email=f.get("email"),
                        timezone=f.get("timezone"),
                        channels=f.get("channels"),
                        quiet_hours=f.get("quiet"),
                        sms_consent=f.get("sms_consent"),
                        full_text=bool(f.get("full_text", False)),
                        region=region,
                        language=f.get("language") or language,
                        both_channels=bool(f.get("both_channels")),
                    )
                for ritual_line, spec in row.rituals:
                    line = ritual_line
                    template = spec.get("template")
                    fields = {k: v for k, v in spec.items() if k != "template"}
                    rituals.add(session, now, c, rituals.RitualSpec(**fields), template=template)
                    done.rituals += 1
                done.couples += 1
                done.partners += len(row.partners)
                done.couple_ids.append(c.id)
        except HearthError as exc:
            problems.append(f"line {line}: {exc}")
    if problems:
        raise ImportRejected(problems)
    return done
