"""The rules of a history: what people, admins, providers and processes do to Hearth.

:func:`machine_for` binds a :class:`~hypothesis.stateful.RuleBasedStateMachine` to a
:class:`~tests.histories.world.World`; each example is one history on that world's database.
Admin changes go through the service functions the CLI calls; partners act over HTTP (the
signed Twilio webhook, their page); the worker is the daemon's own jobs, called as its loop
would, with the fake clock moved only by :meth:`World.advance`.
"""

from __future__ import annotations

import contextlib
import itertools
from datetime import time, timedelta

import sqlalchemy as sa
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from service.channels.base import TransportError
from service.core.exceptions import HearthError
from service.db.models import Answer, Couple, OccurrenceException, Partner, Ritual
from service.domain import couples, partners, rituals
from service.runtime.daemon import Daemon
from service.web.page import tokens as page_tokens
from tests.histories import oracle
from tests.histories.model import CoupleModel, PartnerModel, RitualModel, Span
from tests.histories.world import World

ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC")
QUIET = (None, "22:00-07:00", "21:30-08:30", "23:00-06:00", "13:00-15:00")
WORDS = ("STOP", "START", "PAUSE", "RESUME", "SKIP", "SNOOZE", "DONE", "answer")
FAULTS = ("refuse", "429", "500", "accept-then-timeout", "accept-then-drop", "smtp-451")
ANSWERED = ("got your answer", "changed your answer")
_numbers = itertools.count(1)


def _quiet(value: str | None) -> tuple[time, time] | None:
    if value is None:
        return None
    a, b = value.split("-")
    return time.fromisoformat(a), time.fromisoformat(b)


def machine_for(world: World) -> type[RuleBasedStateMachine]:
    class History(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.world = world
            self.h = world.begin()

        def teardown(self) -> None:
            self.world.end()

        # -- helpers ---------------------------------------------------------------------

        def _seq(self) -> int:
            return self.h.next_seq()

        def _partner(self, i: int) -> PartnerModel:
            ps = self.h.partners
            return ps[i % len(ps)]

        def _ritual(self, i: int) -> RitualModel:
            rs = self.h.rituals
            return rs[i % len(rs)]

        def _sync_pause(self, couple_id: int, by: int | None) -> None:
            """The couple's pause as Hearth now holds it (what the partner was told)."""
            with self.world.db.session() as s:
                c = s.get(Couple, couple_id)
                assert c is not None
                paused, until = c.paused_at, c.paused_until
            model = self.h.couple(couple_id)
            still = paused is not None and (until is None or until > self.world.clock.now())
            open_spans = [span for span in model.pauses if span.end_seq is None]
            if still and open_spans and open_spans[-1].until == until:
                return  # the same pause again (a reload): the same span, told once
            seq = self._seq()
            for span in model.pauses:
                if span.end_seq is None:
                    span.end_seq = seq
            if still:
                model.pauses.append(Span(seq, self.world.clock.now(), until=until, by=by))

        def _sync_skips(self, couple_id: int) -> None:
            with self.world.db.session() as s:
                found = set(
                    s.execute(
                        sa.select(OccurrenceException.ritual_id, OccurrenceException.original_start)
                        .join(Ritual)
                        .where(
                            Ritual.couple_id == couple_id, OccurrenceException.new_start.is_(None)
                        )
                    ).all()
                )
            seq = self._seq()
            for r in self.h.couple(couple_id).rituals:
                known = {occ for _, occ, end in r.skips if end is None}
                for rid, occ in found:
                    if rid == r.id and occ not in known:
                        r.skips.append((seq, occ, None))

        # -- admins ----------------------------------------------------------------------

        @initialize(
            tz=st.sampled_from(ZONES),
            quiet=st.tuples(st.sampled_from(QUIET), st.sampled_from(QUIET)),
            email=st.booleans(),
            hour=st.integers(6, 23),
            half=st.booleans(),
            full=st.booleans(),
        )
        def first_couple(
            self,
            tz: str,
            quiet: tuple[str | None, str | None],
            email: bool,
            hour: int,
            half: bool,
            full: bool = False,
        ) -> None:
            self.add_couple(tz, quiet, email, full)
            self.add_ritual(0, hour, half)

        @rule(
            tz=st.sampled_from(ZONES),
            quiet=st.tuples(st.sampled_from(QUIET), st.sampled_from(QUIET)),
            email=st.booleans(),
            full=st.booleans(),
        )
        def add_couple(
            self, tz: str, quiet: tuple[str | None, str | None], email: bool, full: bool = False
        ) -> None:
            """Two partners who text (one also by email); ``full``: they chose full texts,
            so their check-ins ask the shared question."""
            now = self.world.clock.now()
            made = []
            with self.world.db.session() as s:
                c = couples.add(s, now, name=f"Couple {next(_numbers)}", timezone=tz)
                for name, q, has_email in (("Alex", quiet[0], email), ("Sam", quiet[1], False)):
                    n = next(_numbers)
                    p = partners.add(
                        s,
                        now,
                        c,
                        name=name,
                        phone=f"+49151{n:08d}",
                        email=f"p{n}@example.org" if has_email else None,
                        timezone=None,
                        channels="sms,email" if has_email else "sms",
                        quiet_hours=q,
                        sms_consent="signup form",
                        full_text=full,
                    )
                    s.flush()
                    token = page_tokens.issue(s, now, p, self.world.hearth.keys)
                    made.append((p.id, name, p.phone, p.email, token, q))
                cid = c.id
            seq = self._seq()
            model = CoupleModel(cid, tz, asks=full)
            for pid, name, phone, mail, token, q in made:
                assert phone is not None
                pm = PartnerModel(pid, cid, name, phone, mail, tz, token)
                pm.quiet.append((seq, _quiet(q)))
                model.partners.append(pm)
            self.h.couples.append(model)

        @rule(couple=st.integers(0, 9), hour=st.integers(6, 23), half=st.booleans())
        def add_ritual(self, couple: int, hour: int, half: bool) -> None:
            model = self.h.couples[couple % len(self.h.couples)]
            at = time(hour, 30 if half else 0)
            now = self.world.clock.now()
            with self.world.db.session() as s:
                c = s.get(Couple, model.id)
                assert c is not None
                spec = rituals.RitualSpec(at=at.strftime("%H:%M"))
                rid = rituals.add(s, now, c, spec, template="evening-recap").id
            ritual = RitualModel(rid, model.id, model.timezone)
            ritual.times.append((self._seq(), now, at))
            model.rituals.append(ritual)

        @precondition(lambda self: self.h.rituals)
        @rule(ritual=st.integers(0, 9), hour=st.integers(6, 23), half=st.booleans())
        def edit_ritual_time(self, ritual: int, hour: int, half: bool) -> None:
            model = self._ritual(ritual)
            at = time(hour, 30 if half else 0)
            now = self.world.clock.now()
            try:
                with self.world.db.session() as s:
                    r = s.get(Ritual, model.id)
                    assert r is not None
                    rituals.edit(s, now, r, rituals.RitualSpec(at=at.strftime("%H:%M")))
            except HearthError:
                return  # refused (e.g. the same time): nothing changed
            seq = self._seq()
            model.times.append((seq, now, at))
            model.skips = [(a, occ, seq if end is None else end) for a, occ, end in model.skips]

        @precondition(lambda self: self.h.partners)
        @rule(partner=st.integers(0, 19), quiet=st.sampled_from(QUIET))
        def edit_quiet_hours(self, partner: int, quiet: str | None) -> None:
            model = self._partner(partner)
            with self.world.db.session() as s:
                p = s.get(Partner, model.id)
                assert p is not None
                partners.edit(s, self.world.clock.now(), p, quiet_hours=quiet or "off")
            model.quiet.append((self._seq(), _quiet(quiet)))

        # -- time --------------------------------------------------------------------------

        @rule(minutes=st.sampled_from((1, 10, 30, 60, 180, 720)))
        def advance(self, minutes: int) -> None:
            self.world.advance(timedelta(minutes=minutes))

        @rule(late=st.sampled_from((0, 1, 45)))
        def until_next_send(self, late: int) -> None:
            """On to the next due reminder (``late`` seconds after it), as the worker sleeps."""
            self.world.advance_to_next(timedelta(seconds=late))

        # -- partners ----------------------------------------------------------------------

        @precondition(lambda self: self.h.partners)
        @rule(partner=st.integers(0, 19), word=st.sampled_from(WORDS))
        def text(self, partner: int, word: str) -> None:
            p = self._partner(partner)
            body = f"we walked by the river {next(_numbers)}" if word == "answer" else word
            resp = self.world.text(p.phone, body)
            if resp.status_code != 200:
                return
            seq = self._seq()
            if word == "answer":
                p.answers.append((seq, self.world.clock.now(), body))
            elif word == "STOP":
                p.stops.append(Span(seq, self.world.clock.now()))
            elif word == "START":
                for span in p.stops:
                    span.end_seq = seq if span.end_seq is None else span.end_seq
            elif word in ("PAUSE", "RESUME"):
                self._sync_pause(p.couple_id, p.id)
            elif word == "SKIP":
                self._sync_skips(p.couple_id)

        @precondition(lambda self: self.h.couples)
        @rule(couple=st.integers(0, 9))
        def answer_together(self, couple: int) -> None:
            """Both partners answer at the same moment (two webhooks at once)."""
            model = self.h.couples[couple % len(self.h.couples)]
            a, b = model.partners
            texts = {p.id: f"we cooked together {next(_numbers)}" for p in (a, b)}
            replies: dict[int, str] = {}

            def send(p: PartnerModel) -> None:
                replies[p.id] = self.world.text(p.phone, texts[p.id]).text

            errors = len(self.h.http_errors)
            self.world.concurrently(lambda: send(a), lambda: send(b))
            self.h.http_errors[errors:] = [
                f"{oracle.CONCURRENT_ANSWERS}: {e}" for e in self.h.http_errors[errors:]
            ]
            seq = self._seq()
            now = self.world.clock.now()
            for p in (a, b):
                p.answers.append((seq, now, texts[p.id]))
            # Each was told their answer counts ("got your answer"), or got no reply at all,
            # which is what the answer that completes the pair gets (the reveal follows). One
            # of the two arrives first and is told: both without a reply are not answers (a
            # free text just after a "got it" hint gets none).
            counted = [any(m in replies[p.id] for m in ANSWERED) for p in (a, b)]
            silent = [replies[p.id].endswith("<Response></Response>") for p in (a, b)]
            told = any(counted) and all(c or s for c, s in zip(counted, silent, strict=True))
            if model.asks and told and self._same_occurrence(a.id, b.id):
                self.h.together.append((a.id, b.id, now, seq))

        def _same_occurrence(self, a: int, b: int) -> bool:
            """Whether both answers just given count for one occurrence (each partner answers
            the occurrence they were last nudged about, which may differ after a failed
            send): Hearth's answer rows name it."""
            now = self.world.clock.now()
            with self.world.db.session() as s:
                rows = s.execute(
                    sa.select(Answer.partner_id, Answer.ritual_id, Answer.occurrence_start).where(
                        Answer.partner_id.in_([a, b]), Answer.answered_at == now, ~Answer.late
                    )
                ).all()
            about = {(r.ritual_id, r.occurrence_start) for r in rows}
            return len(rows) == 2 and len(about) == 1

        @precondition(lambda self: self.h.partners)
        @rule(partner=st.integers(0, 19), action=st.sampled_from(("pause", "resume", "skip")))
        def page(self, partner: int, action: str) -> None:
            p = self._partner(partner)
            form: dict[str, str] = {}
            couple = self.h.couple(p.couple_id)
            if action == "skip":
                if not couple.rituals:
                    return
                form["ritual"] = str(couple.rituals[0].id)
            resp = self.world.page(p.page_token, action, form)
            if resp.status_code != 303:
                return
            if action == "skip":
                self._sync_skips(p.couple_id)
            else:
                self._sync_pause(p.couple_id, p.id)

        # -- providers ---------------------------------------------------------------------

        @rule(fault=st.sampled_from(FAULTS))
        def provider_fault(self, fault: str) -> None:
            """The next message the provider sees meets this fault."""
            standin = self.world.standin
            if fault == "refuse":
                standin.fail_next(1, status=400, code=21614)
                self.h.refusals.append(self.world.clock.now())
            elif fault == "429":
                standin.fail_next(1, status=429, retry_after=30)
            elif fault == "500":
                standin.fail_next(1, status=500)
            elif fault == "smtp-451":
                self.world.sink.reject_next(1, 451)
            else:
                how = fault.removeprefix("accept-then-")
                standin.accept_then(1, how, seconds=3 * 0.15)
                self.h.unknown_faults.append((self._seq(), fault))

        @rule(status=st.sampled_from(("delivered", "undelivered")))
        def receipts(self, status: str) -> None:
            """The provider reports on every text it took since the last report."""
            for seen in [s for s in self.h.seen if s.channel == "sms"][-3:]:
                self.world.receipt(seen.provider_id, status)
                if status == "undelivered":
                    self.h.undelivered.add(seen.provider_id)

        # -- processes ---------------------------------------------------------------------

        @rule(
            event=st.sampled_from(
                ("kill-after-claim", "kill-after-send", "second-worker", "database-locked")
            )
        )
        def worker_event(self, event: str) -> None:
            """Something happens to the worker processes (a second one runs its passes at
            the same moment as the first, from then on)."""
            if event == "second-worker":
                if len(self.world.workers) < 2:
                    self.world.workers.append(self.world.new_worker())
                self._both_pass()
            elif event == "database-locked":
                self._locked_pass()
            else:
                self._kill(after_send=event == "kill-after-send")

        def _kill(self, after_send: bool) -> None:
            """The worker dies mid-pass: after claiming (and maybe after the provider took
            the texts, before the outcomes were written); a new one starts."""
            d = self.world.worker.dispatcher
            token, ids = d.claim(10)
            jobs = d.prepare(token, ids)
            if after_send and jobs:
                for job in jobs:
                    with contextlib.suppress(TransportError):
                        d.transports[job.channel].send(job.message)
                self.h.unknown_faults.append((self._seq(), "killed-after-send"))
                self.world.harvest()
            old = self.world.workers.pop(0)
            old.dispatcher.stop(0)
            old.dispatcher.close()
            self.world.workers.insert(0, self.world.new_worker())

        def _both_pass(self) -> None:
            """Both workers run their jobs at the same moment, on one database."""
            first, second = self.world.workers

            def run(worker: Daemon) -> None:
                try:
                    self.world.tick_jobs(worker)
                except Exception:  # a failed pass is logged and retried by the daemon
                    self.world.failed_passes += 1

            self.world.concurrently(lambda: run(first), lambda: run(second), clock_moves=True)
            self.world.harvest()

        def _locked_pass(self) -> None:
            """A worker's pass while another transaction holds the database locked."""
            with self.world.locked_database() as hearth:
                worker = self.world.new_worker(hearth, catch_up=False)
                try:
                    self.world.concurrently(lambda: self.world.tick_jobs(worker), clock_moves=True)
                except Exception:  # the daemon logs it and tries again
                    self.world.failed_passes += 1
                finally:
                    worker.dispatcher.stop(0)
                    worker.dispatcher.close()
            self.world.harvest()

        # -- the oracle --------------------------------------------------------------------

        @invariant()
        def promises_kept(self) -> None:
            self.h.steps += 1
            self.world.harvest()
            lease = timedelta(seconds=self.world.settings.daemon.lease_seconds)
            found = oracle.check(self.h, self.world.reminders(), self.world.clock.now(), lease)
            assert not found, "promise broken:\n" + "\n".join(str(v) for v in found)

    History.__name__ = f"History_{world.backend}"
    return History
