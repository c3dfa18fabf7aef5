"""Why a reminder was not delivered, from its state and stored reason, in a label for the
metrics (``hearth_reminders_undeliverable_total{reason}``) and in words for people
(``hearth deliveries list``, ``hearth doctor``)."""

from __future__ import annotations

from datetime import datetime

# label -> words. Labels are the metric's; the words are what an admin reads.
WORDS = {
    "quiet_hours": "in the partner's quiet hours until it went stale",
    "opted_out": "the partner opted out of this channel",
    "refused": "the provider refused the address for good",
    "stale": "not sent in time (the daemon was down or behind)",
}
_FINAL = {"expired", "failed", "skipped", "undelivered"}


def label(state: str, reason: str | None) -> str | None:
    """The undeliverable reason of a final reminder, or None (sent, cancelled, paused, a
    chase already answered: nothing was lost)."""
    if state not in _FINAL or not reason:
        return None
    if reason.startswith("quiet hours"):
        return "quiet_hours"
    if "opted out" in reason or "21610" in reason:
        return "opted_out"
    if reason == "stale":
        return "stale"
    if state in ("failed", "undelivered"):
        return "refused"
    return None


def words(state: str, reason: str | None) -> str:
    """The reason in words where it is one of :data:`WORDS` (with the provider's own answer
    where it gave one), else the stored text."""
    found = label(state, reason)
    if found is None:
        return reason or ""
    if found in ("refused", "opted_out") and reason and reason != "opted out":
        return f"{WORDS[found]} ({reason})"
    return WORDS[found]


def unknown(since: datetime, error: str | None) -> str:
    """A send whose outcome is unknown (the provider may have the message), in words: it
    is not sent again before the provider has been asked (docs/delivery.md)."""
    why = f" ({error})" if error else ""
    return f"outcome unknown since {since:%H:%M} UTC{why}: the provider is asked before any resend"
