"""``hearth couple``: add, list, show, edit, pause, resume, remove."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import click

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
from service.db.models import Couple
from service.domain import answers, couples, importer, partners, rituals, stats
from service.domain.validation import until_datetime
from service.outbox import capacity
from service.replies import pausing


def couple_dict(c: Couple) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "timezone": c.timezone,
        "paused_at": c.paused_at,
        "paused_until": c.paused_until,
        "partners": [{"id": p.id, "name": p.name, "timezone": p.timezone} for p in c.partners],
        "rituals": [r.id for r in c.rituals if r.ended_at is None],
        "created_at": c.created_at,
    }


@click.group("couple")
def couple_group() -> None:
    """Couples: each has two partners, a home timezone and rituals."""


@couple_group.command("add")
@click.argument("name")
@click.option("--timezone", "-z", required=True, help="Home timezone (IANA), e.g. Europe/Berlin.")
@json_option
def add_cmd(name: str, timezone: str, as_json: bool) -> None:
    """Add a couple called NAME."""
    with unit_of_work() as (_, session, now):
        c = couples.add(session, now, name=name, timezone=timezone)
        data = couple_dict(c)
    if as_json:
        print_json(data)
    else:
        click.echo(f"added couple {data['id']}: {data['name']} ({data['timezone']})")


@couple_group.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """List couples."""
    with read_only() as (_, session, now):
        found = couples.list_all(session)
        data = [couple_dict(c) for c in found]
        rows = [
            (
                c.id,
                c.name,
                c.timezone,
                ", ".join(p.name for p in c.partners),
                len(data[i]["rituals"]),
                "paused" if c.is_paused(now) else "active",
            )
            for i, c in enumerate(found)
        ]
    if as_json:
        print_json(data)
    else:
        print_table(("id", "name", "timezone", "partners", "rituals", "state"), rows)


@couple_group.command("show")
@click.argument("couple")
@json_option
def show_cmd(couple: str, as_json: bool) -> None:
    """Show COUPLE (id or name) with partners and rituals."""
    with read_only() as (_, session, now):
        c = couples.resolve(session, couple)
        data = couple_dict(c)
        state = "active"
        if c.is_paused(now):
            state = (
                f"paused until {fmt_local(c.paused_until, c.timezone)}"
                if c.paused_until
                else "paused"
            )
        fields = [
            ("id", c.id),
            ("name", c.name),
            ("timezone", c.timezone),
            ("state", state),
        ]
        for p in c.partners:
            contact = ", ".join(x for x in (p.phone and "phone", p.email and "email") if x)
            fields.append(
                (
                    f"partner {p.id}",
                    f"{p.name} ({p.timezone}; {p.channels or 'no channels'}; "
                    f"quiet {partners.format_quiet(p)}; {contact or 'no contact'})",
                )
            )
        for r in c.rituals:
            if r.ended_at is None:
                fields.append((f"ritual {r.id}", f"{r.title}: {rituals.describe_schedule(r)}"))
    if as_json:
        print_json(data)
    else:
        print_fields(fields)


@couple_group.command("stats")
@click.argument("couple")
@json_option
def stats_cmd(couple: str, as_json: bool) -> None:
    """Per ritual: completion over 4 and 12 weeks, current and best streak, and each
    partner's mood (replies 1-5) by week over the last 8 weeks.

    An occurrence is kept when every partner who could text DONE then (a phone and SMS
    consent at the time) did so before the next one began, or within replies.grace_hours
    of its start where that is set."""
    with read_only() as (hearth, session, now):
        grace = hearth.settings.replies.grace
        c = couples.resolve(session, couple)
        rows = stats.couple_stats(session, c, now, grace)
        moods = {
            r.ritual_id: answers.mood_trend(session, c, now, ritual_id=r.ritual_id) for r in rows
        }
    if as_json:
        print_json([{**_stats_dict(r), "mood": _mood_dict(moods[r.ritual_id])} for r in rows])
        return
    print_table(
        ["ritual", "title", "4 weeks", "12 weeks", "streak", "best"],
        [
            (
                r.ritual_id,
                r.title,
                *(_rate_cell(r.rates[w]) for w in stats.WINDOWS),
                r.current_streak,
                r.best_streak,
            )
            for r in rows
        ],
    )

    for r in rows:
        trend = "; ".join(
            f"{name} " + " > ".join(f"{w.average:g}" for w in weeks)
            for name, weeks in moods[r.ritual_id].items()
            if weeks
        )
        if trend:
            click.echo(f"mood by week, {r.title} (oldest first, 1-5): {trend}")


def _mood_dict(trend: dict[str, list[answers.MoodWeek]]) -> dict[str, list[dict[str, Any]]]:
    return {
        name: [{"week": w.week.isoformat(), "average": w.average, "count": w.count} for w in weeks]
        for name, weeks in trend.items()
    }


def _rate_cell(rate: stats.Rate) -> str:
    return "-" if rate.percent is None else f"{rate.percent:g}% ({rate.done}/{rate.counted})"


def _stats_dict(r: stats.RitualStats) -> dict[str, Any]:
    rates = {
        f"last_{weeks}_weeks": {"done": x.done, "counted": x.counted, "percent": x.percent}
        for weeks, x in r.rates.items()
    }
    return {
        "ritual_id": r.ritual_id,
        "title": r.title,
        **rates,
        "current_streak": r.current_streak,
        "best_streak": r.best_streak,
    }


@couple_group.command("edit")
@click.argument("couple")
@click.option("--name", help="New name.")
@click.option("--timezone", "-z", help="New home timezone (IANA).")
def edit_cmd(couple: str, name: str | None, timezone: str | None) -> None:
    """Rename COUPLE or change its home timezone."""
    with unit_of_work() as (hearth, session, now):
        c = couples.edit(
            session, now, couples.resolve(session, couple), name=name, timezone=timezone
        )
        click.echo(f"updated couple {c.id}: {c.name} ({c.timezone})")
        warnings.echo(warnings.quiet(hearth, session, now, couple=c))


@couple_group.command("pause")
@click.argument("couple")
@click.option(
    "--until", help="Local date or 'YYYY-MM-DD HH:MM' in the couple's zone; default: until resumed."
)
def pause_cmd(couple: str, until: str | None) -> None:
    """Pause all of COUPLE's reminders (the feed shows the span as skipped)."""
    with unit_of_work() as (_, session, now):
        c = couples.resolve(session, couple)
        end = until_datetime(until, c.timezone) if until is not None else None
        pausing.pause_couple(session, now, c, end)
        suffix = f" until {fmt_local(end, c.timezone)}" if end else " until resumed"
        click.echo(f"paused couple {c.id}{suffix}")


@couple_group.command("resume")
@click.argument("couple")
def resume_cmd(couple: str) -> None:
    """Resume a paused COUPLE."""
    with unit_of_work() as (_, session, now):
        c = couples.resume(session, now, couples.resolve(session, couple))
        click.echo(f"resumed couple {c.id}")


@couple_group.command("remove")
@click.argument("couple")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def remove_cmd(couple: str, yes: bool) -> None:
    """Remove COUPLE and erase its partners' personal data."""
    with read_only() as (_, session, _now):
        c = couples.resolve(session, couple)
        couple_id, name = c.id, c.name
    # Asked with no transaction open: an admin pondering the question must not hold the
    # write lock the daemon and every other command wait for.
    if not yes:
        confirm(f"Remove couple {name!r} and erase its partners' personal data?")
    with unit_of_work() as (hearth, session, now):
        # By id: the couple the admin confirmed, even if it was renamed meanwhile.
        c = couples.resolve(session, couple_id)
        label = f"{c.id}: {c.name}"
        couples.remove(session, now, c)
    click.echo(f"removed couple {label}")
    if not hearth.db.erase_traces():
        click.echo(
            "note: another process is reading the database; the erased data leaves the "
            "write-ahead log at the next checkpoint (docs/operations.md)",
            err=True,
        )


def register(cli: click.Group) -> None:
    cli.add_command(couple_group)


class _DryRun(Exception):
    """Leaves the import's transaction by rolling it back (``--dry-run``)."""


@couple_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--dry-run", is_flag=True, help="Check every row and print the forecast; change nothing."
)
@json_option
def import_cmd(file: Path, dry_run: bool, as_json: bool) -> None:
    """Import couples, partners and rituals from FILE (CSV, or JSON lines: one couple a
    line; see docs/cli.md). All or nothing: every bad row is named with its line number,
    and then nothing is imported (exit status 2)."""
    text = _read_import(file)
    try:
        rows = importer.parse(text, importer.detect(file.name, text))
    except importer.ImportRejected as exc:
        _rejected(file, exc)
    forecast: capacity.Forecast | None = None
    done = importer.Imported()
    try:
        with unit_of_work() as (hearth, session, now):
            settings = hearth.settings
            try:
                done = importer.apply(
                    session, now, rows, settings.defaults.phone_region, settings.defaults.language
                )
            except importer.ImportRejected as exc:
                _rejected(file, exc)
            if dry_run:
                session.flush()
                forecast = capacity.forecast(session.connection(), now, settings)
                raise _DryRun
    except _DryRun:
        pass
    verb = "would import" if dry_run else "imported"
    if as_json:
        print_json(
            {
                **done.as_dict(),
                "dry_run": dry_run,
                "forecast": forecast.as_dict() if forecast else None,
            }
        )
        return
    click.echo(f"{verb} {done.couples} couples, {done.partners} partners, {done.rituals} rituals")
    if forecast is not None:
        click.echo(forecast.summary())


def _rejected(file: Path, exc: importer.ImportRejected) -> NoReturn:
    """Every bad row, one line each, then exit 2 (the transaction rolls back)."""
    for line in exc.problems:
        click.echo(f"error: {_name(file)}: {line}", err=True)
    raise SystemExit(2)


def _name(file: Path) -> str:
    return file.name if len(file.name) <= 60 else file.name[:57] + "..."


def _read_import(file: Path) -> str:
    try:
        size = file.stat().st_size
        if size > importer.MAX_BYTES:
            raise InvalidInput("file", f"{size} bytes is more than {importer.MAX_BYTES}")
        text = file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InvalidInput("file", f"cannot read {_name(file)}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidInput("file", f"{_name(file)} is not UTF-8 text") from None
    if "\x00" in text:
        raise InvalidInput("file", f"{_name(file)} is not a text file (CSV or JSON lines)")
    return text
