"""``hearth ritual``: add, list, show, edit, pause, resume, remove, skip, move, preview."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import click
from sqlalchemy.orm import Session

from cli import warnings
from cli.common import (
    confirm,
    fmt_local,
    json_option,
    print_fields,
    print_json,
    print_table,
    read_only,
    unit_of_work,
)
from service.core.exceptions import InvalidInput
from service.core.timeutil import zone
from service.db.models import Couple, ExceptionKind, Ritual
from service.domain import couples, pauses, reach, rituals, routing, skips, validation
from service.domain.recurrence import reminder_due, schedule_of
from service.domain.validation import until_datetime

F = TypeVar("F", bound=Callable[..., Any])


def ritual_dict(r: Ritual) -> dict[str, Any]:
    return {
        "id": r.id,
        "couple_id": r.couple_id,
        "uid": r.uid,
        "kind": r.kind,
        "template": r.template,
        "title": r.title,
        "description": r.description,
        "start_date": r.dtstart_date,
        "at": r.start_time.strftime("%H:%M") if r.start_time else None,
        "rrule": r.rrule,
        "timezone": r.timezone,
        "duration_minutes": r.duration_minutes,
        "remind_minutes_before": r.offsets,
        "channels": [str(c) for c in r.channel_list],
        "paused_at": r.paused_at,
        "paused_until": r.paused_until,
        "ended_at": r.ended_at,
        "version": r.version,
        "ask": r.ask,
        "exceptions": [
            {
                "kind": e.kind,
                "original_start": e.original_start,
                "new_start": e.new_start,
            }
            for e in r.exceptions
        ],
    }


def schedule_options(f: F) -> F:
    """Options shared by ``add`` and ``edit``."""
    options = [
        click.option("--kind", help="check_in, gratitude, date_night or custom."),
        click.option("--title", help="What partners see, e.g. 'Nightly check-in'."),
        click.option("--description", help="What the ritual is for (shown in the feed)."),
        click.option("--at", help="Local start time HH:MM in the ritual's zone."),
        click.option(
            "--every",
            help="daily | weekdays | weekly:MO,TH | monthly:1SA | monthly:15 | yearly:06-14.",
        ),
        click.option("--rrule", help="An RFC 5545 RRULE instead of --every (at most daily)."),
        click.option("--on", help="First date YYYY-MM-DD (the date itself for anniversaries)."),
        click.option("--duration", help="Length, e.g. 5, 45m, 1h30m."),
        click.option(
            "--remind",
            help="When to remind before the start, e.g. 0,30m,1h,1d (1d: the same time the day"
            " before, whatever a DST change does).",
        ),
        click.option("--channel", "channels", help="Override partners' channels: sms,email."),
        click.option("--timezone", "-z", help="The ritual's zone (default: the couple's)."),
        click.option(
            "--ask/--no-ask",
            default=None,
            help="Ask the prompt as the shared question: answers by text or on the page, each sees "
            "the other's once both answered (default: on for check-ins and gratitude).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _spec(fields: dict[str, Any]) -> rituals.RitualSpec:
    return rituals.RitualSpec(**fields)


@click.group("ritual")
def ritual_group() -> None:
    """Rituals: recurring moments with reminders and a calendar entry."""


@ritual_group.command("add")
@click.argument("couple")
@click.option("--template", "-t", help="Start from a template (see `hearth templates list`).")
@schedule_options
@json_option
def add_cmd(
    couple: str, template: str | None, as_json: bool, ask: bool | None, **fields: Any
) -> None:
    """Add a ritual to COUPLE, from --template or from --kind/--title/--at/--every."""
    with unit_of_work() as (hearth, session, now):
        c = couples.resolve(session, couple)
        r = rituals.add(session, now, c, _spec(fields), template=template, ask=ask)
        data = ritual_dict(r)
        summary = rituals.describe_schedule(r)
        notes = warnings.quiet(hearth, session, now, ritual=r)
        busy = warnings.capacity(hearth, session, now, r)
    if as_json:
        print_json({**data, "warnings": [n.as_dict() for n in notes], "capacity": busy})
    else:
        click.echo(f"added ritual {data['id']}: {data['title']} ({summary})")
        warnings.echo(notes)
        for line in busy:
            click.echo(line)


@ritual_group.command("list")
@click.option("--couple", help="Only this couple (id or name).")
@click.option("--all", "include_removed", is_flag=True, help="Include removed rituals.")
@json_option
def list_cmd(couple: str | None, include_removed: bool, as_json: bool) -> None:
    """List rituals."""
    with read_only() as (_, session, now):
        c = couples.resolve(session, couple) if couple else None
        found = rituals.list_for(session, c, include_removed)
        data = [ritual_dict(r) for r in found]
        rows = [
            (
                r.id,
                r.couple.name,
                r.title,
                r.kind,
                rituals.describe_schedule(r),
                _state(r, now),
            )
            for r in found
        ]
    if as_json:
        print_json(data)
    else:
        print_table(("id", "couple", "title", "kind", "schedule", "state"), rows)


def _state(r: Ritual, now: Any) -> str:
    if r.ended_at is not None:
        return "removed"
    if r.is_paused(now):
        return "paused"
    return "active"


def _ritual(session: Session, ref: str, couple: str | None) -> Ritual:
    c: Couple | None = couples.resolve(session, couple) if couple else None
    return rituals.resolve(session, ref, c)


couple_option = click.option("--couple", help="Couple (id or name), to name RITUAL by title.")


@ritual_group.command("show")
@click.argument("ritual")
@couple_option
@json_option
def show_cmd(ritual: str, couple: str | None, as_json: bool) -> None:
    """Show RITUAL (id, or title with --couple)."""
    with read_only() as (_, session, now):
        r = _ritual(session, ritual, couple)
        data = ritual_dict(r)
        tz = r.timezone
        fields: list[tuple[str, Any]] = [
            ("id", r.id),
            ("couple", r.couple.name),
            ("title", r.title),
            ("kind", r.kind),
            ("schedule", rituals.describe_schedule(r)),
            ("duration", f"{r.duration_minutes} min"),
            ("remind", ", ".join(f"{o} min before" for o in r.offsets) or "never"),
            ("channels", ",".join(data["channels"]) or "partners' own"),
            ("state", _state(r, now)),
            ("shared question", "on" if r.ask else "off"),
            ("version", r.version),
            ("uid", r.uid),
        ]
        for e in r.exceptions:
            what = "skipped" if e.kind is ExceptionKind.SKIP else "moved to "
            if e.new_start is not None:
                what += fmt_local(e.new_start, tz)
            fields.append(("exception", f"{fmt_local(e.original_start, tz)} {what}"))
    if as_json:
        print_json(data)
    else:
        print_fields(fields)


@ritual_group.command("edit")
@click.argument("ritual")
@couple_option
@schedule_options
def edit_cmd(ritual: str, couple: str | None, ask: bool | None, **fields: Any) -> None:
    """Change RITUAL. A schedule change drops its skips and moves."""
    with unit_of_work() as (hearth, session, now):
        r = rituals.edit(session, now, _ritual(session, ritual, couple), _spec(fields), ask=ask)
        click.echo(f"updated ritual {r.id}: {r.title} ({rituals.describe_schedule(r)})")
        warnings.echo(warnings.quiet(hearth, session, now, ritual=r))
        for line in warnings.capacity(hearth, session, now, r):
            click.echo(line)


@ritual_group.command("pause")
@click.argument("ritual")
@couple_option
@click.option("--until", help="Local date or 'YYYY-MM-DD HH:MM'; default: until resumed.")
def pause_cmd(ritual: str, couple: str | None, until: str | None) -> None:
    """Pause RITUAL's reminders (the feed shows the span as skipped)."""
    with unit_of_work() as (_, session, now):
        r = _ritual(session, ritual, couple)
        end = until_datetime(until, r.timezone) if until is not None else None
        rituals.pause(session, now, r, end)
        suffix = f" until {fmt_local(end, r.timezone)}" if end else " until resumed"
        click.echo(f"paused ritual {r.id}{suffix}")


@ritual_group.command("resume")
@click.argument("ritual")
@couple_option
def resume_cmd(ritual: str, couple: str | None) -> None:
    """Resume a paused RITUAL."""
    with unit_of_work() as (_, session, now):
        r = rituals.resume(session, now, _ritual(session, ritual, couple))
        click.echo(f"resumed ritual {r.id}")


@ritual_group.command("remove")
@click.argument("ritual")
@couple_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def remove_cmd(ritual: str, couple: str | None, yes: bool) -> None:
    """End RITUAL now; past occurrences stay in partners' calendars."""
    with read_only() as (_, session, _now):
        r = _ritual(session, ritual, couple)
        rituals.ensure_active(r)  # refuse before asking, not after
        ritual_id, title = r.id, r.title
    # Asked with no transaction open: an admin pondering the question must not hold the
    # write lock the daemon and every other command wait for.
    if not yes:
        confirm(f"End ritual {title!r}?")
    with unit_of_work() as (_, session, now):
        r = rituals.resolve(session, ritual_id)  # by id: the ritual the admin confirmed
        rituals.remove(session, now, r)
        click.echo(f"removed ritual {r.id}: {r.title}")


@ritual_group.command("skip")
@click.argument("ritual")
@click.argument("date")
@couple_option
def skip_cmd(ritual: str, date: str, couple: str | None) -> None:
    """Skip RITUAL's occurrence on DATE (YYYY-MM-DD, the ritual's local date; `next`: its
    next occurrence not skipped yet)."""
    with unit_of_work() as (_, session, now):
        r = _ritual(session, ritual, couple)
        if date.strip().lower() == "next":
            original = skips.next_occurrence(r, now)
        else:
            original = skips.occurrence_on(r, validation.local_date(date))
        skips.skip(session, now, r, original)
        click.echo(f"skipped ritual {r.id} on {fmt_local(original, r.timezone)}")


@ritual_group.command("move")
@click.argument("ritual")
@click.argument("date")
@click.option("--to", "to", required=True, help="New local start 'YYYY-MM-DD HH:MM'.")
@couple_option
def move_cmd(ritual: str, date: str, to: str, couple: str | None) -> None:
    """Move RITUAL's occurrence on DATE to another local time."""
    with unit_of_work() as (_, session, now):
        r = _ritual(session, ritual, couple)
        original = skips.occurrence_on(r, validation.local_date(date))
        exc = skips.move(session, now, r, original, validation.local_datetime(to, "to"))
        assert exc.new_start is not None
        click.echo(
            f"moved ritual {r.id} from {fmt_local(original, r.timezone)} "
            f"to {fmt_local(exc.new_start, r.timezone)}"
        )


@ritual_group.command("preview")
@click.argument("ritual", required=False)
@couple_option
@click.option("--count", default=5, show_default=True, help="How many occurrences per ritual.")
@json_option
def preview_cmd(ritual: str | None, couple: str | None, count: int, as_json: bool) -> None:
    """Next occurrences of RITUAL (or all of --couple's), in the couple's zone and in each
    partner's own zone, with the instants their reminders go out (a whole day before is
    the same wall time the day before, as the calendar's alarms say).

    Occurrences inside a pause (the ritual's or the couple's) are listed and marked paused:
    nobody is nudged for them."""
    if not 1 <= count <= 500:
        raise InvalidInput("count", f"{count} is out of range", "1 to 500")
    with read_only() as (hearth, session, now):
        early = timedelta(hours=hearth.settings.daemon.quiet_early_hours)
        stale = hearth.settings.daemon.stale_after_minutes
        if ritual:
            chosen = [_ritual(session, ritual, couple)]
        elif couple:
            chosen = rituals.list_for(session, couples.resolve(session, couple))
        else:
            raise InvalidInput("preview", "name a RITUAL or give --couple")
        data: list[dict[str, Any]] = []
        for r in chosen:
            # A list, not a dict by name: partners may share a name (or be called "couple").
            zones: list[tuple[int | None, str, str]] = [(None, r.couple.name, r.couple.timezone)]
            zones += [(p.id, p.name, p.timezone) for p in r.couple.partners]
            sched = schedule_of(r)
            people = {p.id: p for p in r.couple.partners}
            for occ in rituals.upcoming(r, now, count):
                quiet = {
                    pid: reach.occurrence_fates(r, occ.start, p, early, stale)
                    for pid, p in people.items()
                }
                data.append(
                    {
                        "ritual_id": r.id,
                        "title": r.title,
                        "start": occ.start,
                        "moved": occ.moved,
                        # Still listed so the gap is visible, but nobody is nudged for it.
                        "paused": pauses.paused_then(r, occ.start),
                        "local": [
                            {
                                "partner_id": pid,
                                "name": name,
                                "timezone": tz,
                                "time": fmt_local(occ.start, tz),
                                # Which channel carries this partner's nudges.
                                "route": routing.describe(people[pid], r) if pid else None,
                                "via": routing.short(people[pid], r) if pid else None,
                                # Nudges in this partner's quiet hours: moved or lost.
                                "quiet_hours": [
                                    {
                                        "offset_minutes": off,
                                        "delivered": f.at is not None,
                                        "sent_at": f.at,
                                        "mark": reach.mark(f, tz),
                                    }
                                    for off, f in quiet.get(pid or 0, [])
                                ],
                            }
                            for pid, name, tz in zones
                        ],
                        "reminders": [
                            {"minutes_before": m, "at": reminder_due(sched, occ.start, m)}
                            for m in r.offsets
                        ],
                    }
                )
    if as_json:
        print_json(data)
        return
    if not data:
        click.echo("(no upcoming occurrences)")
        return
    rows = [
        (
            d["ritual_id"],
            d["title"]
            + (" (moved)" if d["moved"] else "")
            + (" (paused: no nudge)" if d["paused"] else ""),
            *(
                " ".join(
                    [
                        z["time"],
                        *([z["via"]] if z["via"] else []),
                        *(q["mark"] for q in z["quiet_hours"]),
                    ]
                )
                for z in d["local"]
            ),
            _reminders(d["reminders"], d["local"][0]["timezone"]),
        )
        for d in data
    ]
    print_table(("id", "ritual", *_zone_headers(data[0]["local"]), "reminders (couple)"), rows)


def _reminders(reminders: list[dict[str, Any]], tz: str) -> str:
    """'1d: Sat 03-27 21:00, 30m: Sun 03-28 20:30' in the couple's zone."""
    local = zone(tz)
    return ", ".join(
        f"{_before(r['minutes_before'])}: {r['at'].astimezone(local):%a %m-%d %H:%M}"
        for r in reminders
    )


def _before(minutes: int) -> str:
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    text = "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (mins, "m")) if n)
    return text or "0"


def _zone_headers(local: list[dict[str, Any]]) -> list[str]:
    """'couple', then each partner's name; a name that would read as another column's gets
    the partner's id, so every column is told apart."""
    labels = ["couple" if z["partner_id"] is None else z["name"] for z in local]
    folded = [label.casefold() for label in labels]
    return [
        label
        if z["partner_id"] is None or folded.count(label.casefold()) == 1
        else f"{label} #{z['partner_id']}"
        for z, label in zip(local, labels, strict=True)
    ]


def register(cli: click.Group) -> None:
    cli.add_command(ritual_group)
