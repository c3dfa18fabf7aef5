"""The planner: keeps reminder rows for every active ritual, partner, channel and offset over a
rolling horizon.

Idempotent by construction: rows go in with ``INSERT ... ON CONFLICT DO NOTHING`` on the
outbox's unique key, so running twice, or from two processes at once, adds nothing. It reads
with Core (not the ORM) in chunks of couples: a community of 100k couples plans in bounded
memory. :func:`replan` is the per-couple variant the daemon runs after an edit: in one
transaction it cancels the couple's future unsent nudges that no longer match, revives ones
that match again (a pause then a resume) and inserts what is missing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from service.core.metrics import observe_cancelled
from service.core.sections import DaemonSettings, DeliverySettings
from service.core.timeutil import before_quiet_hours, zone
from service.db.engine import Database
from service.db.models import (
    Channel,
    ConsentState,
    Couple,
    ExceptionKind,
    OccurrenceException,
    Partner,
    Reminder,
    ReminderPurpose,
    ReminderState,
    Ritual,
    table,
)
from service.domain.pauses import in_pause
from service.domain.reach import stale_after
from service.domain.recurrence import Schedule, nudge_anchor, occurrences, reminder_due
from service.domain.routing import legs
from service.outbox.bulk import COLUMNS, adapt_rows, insert_rows, insert_sql

log = structlog.get_logger("hearth.planner")

CHUNK_COUPLES = 2000
# How far ahead of its time a reminder may go out to miss the partner's quiet hours.
QUIET_EARLY = timedelta(hours=3)
# How long a standby channel's nudge waits behind the preferred one (delivery settings).
FALLBACK_AFTER = timedelta(minutes=2)
# A standby leaves at the latest this long before its nudge expires (a short ritual's window).
_LAST_CHANCE = timedelta(seconds=15)
_NUDGE = ReminderPurpose.NUDGE.value
_SCHEDULED = ReminderState.SCHEDULED.value
_T = table(Reminder)


class Shape(NamedTuple):
    """What shapes the planned rows, from the ``daemon`` and ``delivery`` settings; passed
    as keywords to :func:`plan`, :func:`replan` and :func:`wanted_rows`."""

    horizon: timedelta
    stale_minutes: float
    quiet_early: timedelta = QUIET_EARLY
    fallback_after: timedelta = FALLBACK_AFTER

    @classmethod
    def of(cls, daemon: DaemonSettings, delivery: DeliverySettings) -> Shape:
        return cls(
            timedelta(hours=daemon.horizon_hours),
            daemon.stale_after_minutes,
            timedelta(hours=daemon.quiet_early_hours),
            timedelta(seconds=delivery.fallback_after_seconds),
        )


@dataclass
class PlanResult:
    created: int = 0
    cancelled: int = 0
    revived: int = 0
    couples: int = 0
    unplannable: list[int] = field(default_factory=list)  # couple ids whose data raised


class _Partner(NamedTuple):
    id: int
    channels: tuple[str, ...]  # usable now: contact present, consent given
    tz: ZoneInfo
    quiet_start: time | None
    quiet_end: time | None
    chosen: tuple[str, ...] = ()  # every channel the partner chose, in their order
    both: bool = False  # every channel, not one nudge per moment


class _Ritual(NamedTuple):
    id: int
    couple_id: int
    schedule: Schedule
    offsets: tuple[int, ...]
    channels: tuple[str, ...]
    paused_at: datetime | None
    paused_until: datetime | None


def _usable_channels(row: Any) -> tuple[str, ...]:
    usable = []
    for name in (row.channels or "").split(","):
        if name == "sms" and row.phone and row.sms_consent == ConsentState.CONSENTED:
            usable.append("sms")
        elif name == "email" and row.email and row.email_opted_out_at is None:
            usable.append("email")
    return tuple(usable)


def _expand(
    s: Schedule, start: datetime, end: datetime, memo: dict[tuple[int, datetime, datetime], Any]
) -> Sequence[tuple[datetime, datetime]]:
    """Rituals without exceptions share interned schedules (see :func:`_load`): rituals made
    from the same template expand once per pass, which keeps a 100k-couple pass close to the
    speed of its inserts."""
    if s.skips or s.moves:
        return [(o.start, o.original_start) for o in occurrences(s, start, end)]
    key = (id(s), start, end)
    found = memo.get(key)
    if found is None:
        found = memo[key] = [(o.start, o.original_start) for o in occurrences(s, start, end)]
    return found


def wanted_rows(
    rituals: Sequence[_Ritual],
    partners: dict[int, list[_Partner]],
    couple_pause: dict[int, tuple[datetime | None, datetime | None]],
    now: datetime,
    horizon: timedelta,
    stale_minutes: float,
    quiet_early: timedelta = QUIET_EARLY,
    fallback_after: timedelta = FALLBACK_AFTER,
) -> Iterator[tuple[Any, ...]]:
    """Rows (in ``COLUMNS`` order) for every nudge due in [now, now + horizon) that is
    still fresh; occurrences inside a pause are not planned.

    Planned late (the ritual made, edited or resumed after a nudge's due time): the nudge
    goes out at once while the occurrence has not started, whatever its offset; of several
    such offsets only the shortest is kept, so a late ritual gets one text, not a volley.
    A nudge that falls in a partner's quiet hours is brought forward to just before they
    begin when that is at most ``quiet_early`` ahead (the send-time gate defers the others
    to the end of the quiet hours, or expires them).

    One nudge per partner per moment (service/domain/routing.py): the first usable channel
    goes at the nudge's time, each next one as a standby ``fallback_after`` later per rank."""
    end = now + horizon
    memo: dict[tuple[int, datetime, datetime], Any] = {}
    # Look back far enough to catch an occurrence whose nudge is still fresh, and ahead
    # far enough that an offset reaching before the horizon end is included.
    for r in rituals:
        max_offset = timedelta(minutes=max(r.offsets, default=0))
        stale = stale_after(int(r.schedule.duration.total_seconds() // 60), stale_minutes)
        lo = now - stale - timedelta(days=1 if r.schedule.all_day else 0)
        far = r.schedule.all_day or max_offset >= timedelta(days=1)  # a nominal day may be 25 h
        hi = end + max_offset + timedelta(days=1 if far else 0)
        cp_at, cp_until = couple_pause.get(r.couple_id, (None, None))
        slots = []  # (offset, original, due, expires) for this ritual
        for start, original in _expand(r.schedule, lo, hi, memo):
            if in_pause(start, r.paused_at, r.paused_until) or in_pause(start, cp_at, cp_until):
                continue
            anchor = nudge_anchor(r.schedule, start)  # the start (an all-day one: 09:00)
            late: tuple[int, datetime] | None = None  # passed and stale, occurrence ahead
            going_now = False  # a kept offset whose due has passed: it goes out at once
            for offset in r.offsets:
                due = reminder_due(r.schedule, start, offset)  # whole days: nominal days
                expires = due + stale
                if due < end and expires > now:
                    slots.append((offset, original, due, expires))
                    going_now = going_now or due <= now
                elif due <= now < anchor and (late is None or offset < late[0]):
                    late = (offset, due)
            if late is not None and not going_now:
                slots.append((late[0], original, late[1], anchor))
        if not slots:
            continue
        for p in partners.get(r.couple_id, ()):
            quiet = p.quiet_start is not None and p.quiet_end is not None
            for ch, rank in legs(r.channels, p.chosen or p.channels, p.channels, p.both):
                for offset, original, due, expires in slots:
                    at = due
                    if quiet:
                        at = (
                            before_quiet_hours(due, p.tz, p.quiet_start, p.quiet_end, quiet_early)
                            or due
                        )
                    slot = at  # a standby is claimed only once the preferred one had its turn
                    if rank:
                        slot = min(at + rank * fallback_after, max(at, expires - _LAST_CHANCE))
                    yield (
                        r.couple_id,
                        r.id,
                        p.id,
                        ch,
                        offset,
                        _NUDGE,
                        original,
                        at,
                        expires,
                        _SCHEDULED,
                        0,
                        slot,
                        now,
                        now,
                        rank > 0,
                    )


def _among(col: Any, ids: Sequence[int]) -> Any:
    """``col IN ids``, as a range when the ids are contiguous (keyset chunks usually are):
    a 2000-item IN list costs more to compile than the query takes to run."""
    if ids and ids[-1] - ids[0] + 1 == len(ids):
        return col.between(ids[0], ids[-1])
    return col.in_(ids)


def _load(
    conn: Connection, couple_ids: Sequence[int], now: datetime
) -> tuple[
    list[_Ritual],
    dict[int, list[_Partner]],
    dict[int, tuple[datetime | None, datetime | None]],
]:
    c, p, r, e = (t.__table__ for t in (Couple, Partner, Ritual, OccurrenceException))
    pauses = {
        row.id: (row.paused_at, row.paused_until)
        for row in conn.execute(
            sa.select(c.c.id, c.c.paused_at, c.c.paused_until).where(_among(c.c.id, couple_ids))
        )
    }
    partners: dict[int, list[_Partner]] = defaultdict(list)
    pcols = (
        p.c.id,
        p.c.couple_id,
        p.c.channels,
        p.c.phone,
        p.c.email,
        p.c.sms_consent,
        p.c.email_opted_out_at,
        p.c.timezone,
        p.c.quiet_start,
        p.c.quiet_end,
        p.c.both_channels,
    )
    zones: dict[str, ZoneInfo] = {}
    for row in conn.execute(
        sa.select(*pcols).where(_among(p.c.couple_id, couple_ids)).order_by(p.c.id)
    ):
        tz = zones.get(row.timezone) or zones.setdefault(row.timezone, zone(row.timezone))
        partners[row.couple_id].append(
            _Partner(
                row.id,
                _usable_channels(row),
                tz,
                row.quiet_start,
                row.quiet_end,
                tuple(x for x in (row.channels or "").split(",") if x),
                bool(row.both_channels),
            )
        )
    ritual_rows = list(
        conn.execute(
            sa.select(
                r.c.id,
                r.c.couple_id,
                r.c.dtstart_date,
                r.c.start_time,
                r.c.duration_minutes,
                r.c.timezone,
                r.c.rrule,
                r.c.ended_at,
                r.c.reminder_offsets,
                r.c.channels,
                r.c.paused_at,
                r.c.paused_until,
            )
            .where(
                _among(r.c.couple_id, couple_ids),
                sa.or_(r.c.ended_at.is_(None), r.c.ended_at > now),
            )
            .order_by(r.c.id)
            # Held until the pass commits: an edit of one of these rituals waits for it, so
            # its replan sees (and cancels) what the pass inserted, and a pass that comes
            # second reads the edit. Without it, on PostgreSQL a pass that read the ritual
            # before an edit could insert rows for the old time after the replan committed.
            # (In id order, as a multi-ritual edit's updates, so neither waits for the
            # other in a cycle. SQLite: the pass's BEGIN IMMEDIATE serializes it already.)
            .with_for_update(read=True)
        )
    )
    skips: dict[int, set[datetime]] = defaultdict(set)
    moves: dict[int, dict[datetime, datetime]] = defaultdict(dict)
    if ritual_rows:
        ids = [row.id for row in ritual_rows]
        for ex in conn.execute(sa.select(e).where(e.c.ritual_id.in_(ids))):
            if ex.kind == ExceptionKind.SKIP:
                skips[ex.ritual_id].add(ex.original_start)
            elif ex.new_start is not None:
                moves[ex.ritual_id][ex.original_start] = ex.new_start
    interned: dict[tuple[Any, ...], Any] = {}

    def intern(value: Any) -> Any:
        return interned.setdefault(value, value)

    rituals = []
    for rr in ritual_rows:
        plain = rr.id not in skips and rr.id not in moves
        key = (
            rr.dtstart_date,
            rr.start_time,
            rr.duration_minutes,
            rr.timezone,
            rr.rrule,
            rr.ended_at,
        )
        schedule = interned.get(key) if plain else None
        if schedule is None:
            schedule = Schedule(
                dtstart_date=rr.dtstart_date,
                start_time=rr.start_time,
                duration=timedelta(minutes=rr.duration_minutes),
                timezone=rr.timezone,
                rrule=rr.rrule,
                skips=frozenset(skips.get(rr.id, ())),
                moves=moves.get(rr.id, {}),
                ends_at=rr.ended_at,
            )
            if plain:
                interned[key] = schedule
        rituals.append(
            _Ritual(
                id=rr.id,
                couple_id=rr.couple_id,
                schedule=schedule,
                offsets=intern(tuple(int(x) for x in rr.reminder_offsets.split(",") if x != "")),
                channels=intern(tuple(Channel(x).value for x in rr.channels.split(",") if x)),
                paused_at=rr.paused_at,
                paused_until=rr.paused_until,
            )
        )
    return rituals, partners, pauses


def plan(
    engine: Database | sa.Engine,
    now: datetime,
    horizon: timedelta,
    stale_minutes: float,
    couple_ids: Sequence[int] | None = None,
    chunk: int = CHUNK_COUPLES,
    count: bool = False,
    quiet_early: timedelta = QUIET_EARLY,
    fallback_after: timedelta = FALLBACK_AFTER,
) -> PlanResult:
    """One planning pass over all couples (or ``couple_ids``), a transaction per chunk.
    ``count=True`` reports how many rows were new (costs a count per chunk). Given the
    :class:`Database`, its errors come as the one-line kinds (unavailable, busy)."""
    result = PlanResult()
    shape = Shape(horizon, stale_minutes, quiet_early, fallback_after)
    c = Couple.__table__
    last = 0
    while True:
        stmt = sa.select(c.c.id).where(c.c.id > last).order_by(c.c.id).limit(chunk)
        if couple_ids is not None:
            stmt = stmt.where(c.c.id.in_(couple_ids))
        with engine.begin() as conn:
            ids = list(conn.scalars(stmt))
            if not ids:
                break
            rows = _chunk_rows(conn, ids, now, shape, result)
            if rows:
                if count:
                    result.created += insert_rows(conn, rows)
                else:
                    conn.exec_driver_sql(insert_sql(conn), adapt_rows(conn, rows))
        result.couples += len(ids)
        last = ids[-1]
    return result


def _rows(conn: Connection, ids: list[int], now: datetime, shape: Shape) -> list[tuple[Any, ...]]:
    rituals, partners, pauses = _load(conn, ids, now)
    return list(wanted_rows(rituals, partners, pauses, now, **shape._asdict()))


def _chunk_rows(
    conn: Connection, ids: list[int], now: datetime, shape: Shape, result: PlanResult
) -> list[tuple[Any, ...]]:
    """The chunk's rows. When one couple's data cannot be planned (a rule or a zone this
    system cannot read, say after a tzdata update), the chunk is planned again couple by
    couple: the others are served and the bad ones named, not all 2,000 dropped."""
    try:
        return _rows(conn, ids, now, shape)
    except sa.exc.SQLAlchemyError:
        raise  # the database's fault, not the data's: the pass fails and is tried again
    except Exception:
        rows = []
        for couple_id in ids:
            try:
                rows += _rows(conn, [couple_id], now, shape)
            except sa.exc.SQLAlchemyError:
                raise
            except Exception as exc:
                result.unplannable.append(couple_id)
                log.exception("plan_couple_failed", couple_id=couple_id, error=type(exc).__name__)
        return rows


def replan(
    conn: Connection,
    now: datetime,
    couple_id: int,
    horizon: timedelta,
    stale_minutes: float,
    quiet_early: timedelta = QUIET_EARLY,
    fallback_after: timedelta = FALLBACK_AFTER,
) -> PlanResult:
    """Bring one couple's future unsent nudges in line with its current definition (runs in
    the caller's transaction)."""
    result = PlanResult(couples=1)
    rituals, partners, pauses = _load(conn, [couple_id], now)
    rows = list(
        wanted_rows(
            rituals, partners, pauses, now, horizon, stale_minutes, quiet_early, fallback_after
        )
    )
    key_idx = [COLUMNS.index(k) for k in _KEY]
    wanted = {_key_of(row, key_idx): row for row in rows}
    existing = conn.execute(
        sa.select(
            _T.c.id,
            _T.c.state,
            _T.c.due_at,
            _T.c.expires_at,
            _T.c.standby,
            *(_T.c[k] for k in _KEY),
        ).where(
            _T.c.couple_id == couple_id,
            _T.c.purpose == ReminderPurpose.NUDGE,
            _T.c.state.in_([ReminderState.SCHEDULED, ReminderState.CANCELLED]),
            _T.c.due_at >= now - timedelta(days=1),
        )
    ).all()
    cancel, revive, retime = [], [], []
    cancelled_on: dict[str, int] = defaultdict(int)
    present = set()
    due_i, exp_i = COLUMNS.index("due_at"), COLUMNS.index("expires_at")
    sb_i, slot_i = COLUMNS.index("standby"), COLUMNS.index("next_attempt_at")
    for row in existing:
        key = (
            row.ritual_id,
            row.occurrence_start,
            row.partner_id,
            str(row.channel),
            row.offset_minutes,
        )
        present.add(key)
        want = wanted.get(key)
        if row.state == ReminderState.SCHEDULED and want is None:
            cancel.append(row.id)
            cancelled_on[str(row.channel)] += 1
        elif row.state == ReminderState.CANCELLED and want is not None:
            revive.append(row.id)
        if want is not None and (
            row.due_at != want[due_i]
            or row.expires_at != want[exp_i]
            or bool(row.standby) != want[sb_i]
        ):
            # A moved occurrence keeps its key (the original start) but not its time; a
            # nudge planned again late (a resume) is fresh until its occurrence starts.
            retime.append(
                {
                    "rid": row.id,
                    "due": want[due_i],
                    "slot": want[slot_i],
                    "exp": want[exp_i],
                    "sb": want[sb_i],
                }
            )
    if cancel:
        conn.execute(
            _T.update()
            .where(_T.c.id.in_(cancel), _T.c.state == ReminderState.SCHEDULED)
            .values(
                state=ReminderState.CANCELLED, last_error="replanned", final_at=now, updated_at=now
            )
        )
    if revive:
        conn.execute(
            _T.update()
            .where(_T.c.id.in_(revive))
            .values(
                state=ReminderState.SCHEDULED,
                last_error=None,
                final_at=None,
                attempts=0,
                updated_at=now,
            )
        )
    if retime:
        conn.execute(
            _T.update()
            .where(_T.c.id == sa.bindparam("rid"), _T.c.state == ReminderState.SCHEDULED)
            .values(
                due_at=sa.bindparam("due"),
                next_attempt_at=sa.bindparam("slot"),
                expires_at=sa.bindparam("exp"),
                standby=sa.bindparam("sb"),
                updated_at=now,
            ),
            retime,
        )
    for channel, n in cancelled_on.items():
        observe_cancelled(channel, n)
    missing = [row for key, row in wanted.items() if key not in present]
    result.created = insert_rows(conn, missing)
    result.cancelled, result.revived = len(cancel), len(revive)
    return result


_KEY = ("ritual_id", "occurrence_start", "partner_id", "channel", "offset_minutes")


def _key_of(row: tuple[Any, ...], idx: list[int]) -> tuple[Any, ...]:
    return tuple(row[i] for i in idx)
