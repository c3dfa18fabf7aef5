"""Prometheus metrics every component records into; ``/metrics`` exposes them.

Counters and histograms live in process memory (per process, as Prometheus expects);
outbox depth and the oldest due age are read from the database at scrape time.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.core import reasons

REGISTRY = CollectorRegistry(auto_describe=True)

REMINDERS = Counter(
    "hearth_reminders_total",
    "Reminders that reached an outcome, by channel and state",
    ["channel", "state"],
    registry=REGISTRY,
)
UNDELIVERABLE = Counter(
    "hearth_reminders_undeliverable_total",
    "Reminders that reached a final state unsent, by channel and reason (quiet_hours, "
    "opted_out, refused, stale)",
    ["channel", "reason"],
    registry=REGISTRY,
)
SEND_LATENCY = Histogram(
    "hearth_send_latency_seconds",
    "Time the channel took to accept one message",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
    registry=REGISTRY,
)
LATENESS = Histogram(
    "hearth_send_lateness_seconds",
    "Seconds between a reminder's due time and its send",
    ["channel"],
    # Up to 1800 s: a reminder may go out until daemon.stale_after_minutes (30) is over.
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 1800),
    registry=REGISTRY,
)
PLANNER_DURATION = Histogram(
    "hearth_planner_duration_seconds",
    "Duration of one planning pass",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300),
    registry=REGISTRY,
)
UNPLANNABLE = Gauge(
    "hearth_couples_unplannable",
    "Couples the last planning pass could not plan (their data raised; see plan_couple_failed)",
    registry=REGISTRY,
)
WEBHOOKS = Counter(
    "hearth_webhook_requests_total",
    "Twilio webhook requests by endpoint and outcome",
    ["endpoint", "outcome"],
    registry=REGISTRY,
)
EMAIL_REPLIES = Counter(
    "hearth_email_replies_total",
    "Messages the mailbox worker read from the reply mailbox, by outcome",
    ["outcome"],
    registry=REGISTRY,
)
FEED_REQUESTS = Counter(
    "hearth_feed_requests_total",
    "Feed requests by status (200, 304, 404)",
    ["status"],
    registry=REGISTRY,
)
FEED_BUILDS = Counter(
    "hearth_feed_builds_total",
    "Feed calendars built (requests the feed cache could not answer)",
    registry=REGISTRY,
)
PAGE_REQUESTS = Counter(
    "hearth_page_requests_total",
    "Partner page requests by kind (view, write) and outcome",
    ["kind", "outcome"],
    registry=REGISTRY,
)
DISPATCH_TICK = Gauge(
    "hearth_dispatcher_last_tick_timestamp_seconds",
    "When the dispatcher loop last completed a pass without error (Unix time)",
    registry=REGISTRY,
)

PREDICTED_LATENESS = Gauge(
    "hearth_predicted_worst_lateness_seconds",
    "Capacity forecast of the next 24 h: the most any nudge would leave after its due time, "
    "per sender pool, at its configured rate (service/outbox/capacity.py)",
    ["pool"],
    registry=REGISTRY,
)
PREDICTED_EXPIRED = Gauge(
    "hearth_predicted_expired_reminders",
    "Capacity forecast of the next 24 h: nudges that would expire before their turn, per pool",
    ["pool"],
    registry=REGISTRY,
)


def observe_forecast(pool: str, worst_late_seconds: float, expired: int) -> None:
    PREDICTED_LATENESS.labels(pool=pool).set(worst_late_seconds)
    PREDICTED_EXPIRED.labels(pool=pool).set(expired)


class Tick:
    """When this process's dispatcher last completed a pass (Unix seconds; 0: never): the
    gauge scrapers read, and the value ``/readyz`` reads without reaching into the gauge."""

    def __init__(self) -> None:
        self._at = 0.0

    def mark(self, at: datetime) -> None:
        self._at = at.timestamp()
        DISPATCH_TICK.set(self._at)

    @property
    def last(self) -> float:
        return self._at


LAST_TICK = Tick()


def observe_send(
    channel: str,
    state: str,
    latency: float | None,
    lateness: float | None,
    reason: str | None = None,
) -> None:
    REMINDERS.labels(channel=channel, state=state).inc()
    why = reasons.label(state, reason)
    if why is not None:
        UNDELIVERABLE.labels(channel=channel, reason=why).inc()
    if latency is not None:
        SEND_LATENCY.labels(channel=channel).observe(latency)
    if lateness is not None:
        LATENESS.labels(channel=channel).observe(max(0.0, lateness))


# Twilio statuses that finalise a sent text (service.receipts maps them to reminder states).
RECEIPT_STATES = frozenset({"delivered", "undelivered", "failed"})


def observe_receipt(status: str, outcome: str) -> None:
    """A delivery receipt that moved a sent text to a final state counts, labelled with the
    receipt's status (what Twilio reported). A duplicate, late, parked or unknown receipt,
    or one that sends the text again, changed no final state and counts nothing here (the
    webhook metric has those)."""
    if outcome == "ok" and status in RECEIPT_STATES:
        REMINDERS.labels(channel="sms", state=status).inc()


def observe_cancelled(channel: str, count: int = 1) -> None:
    """Reminders cancelled before their send (a replan, a STOP, a removed ritual)."""
    if count:
        REMINDERS.labels(channel=channel, state="cancelled").inc(count)
