"""Which channel carries a partner's nudge: one nudge per partner per moment.

A partner's channels are an order of preference (a ritual's own channel list, when it has one,
orders them instead). A nudge goes by the first channel that can deliver it (a contact, consent,
not opted out); the next one is planned as a *standby* a little later and is sent only when the
first could not deliver (service/outbox/fallback.py). A partner who asked for every channel
(``both_channels``) gets the nudge on each. The planner, the send-time check, ``ritual preview``,
the page and ``hearth doctor`` all read the route from here.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import NamedTuple

from service.db.models import Channel, ConsentState, Partner, Ritual


class Leg(NamedTuple):
    channel: str
    rank: int  # 0: goes at its slot; 1, 2...: a standby behind the ranks before it


def order(ritual_channels: Sequence[str], partner_channels: Sequence[str]) -> list[str]:
    """The channels a ritual's nudge may use for a partner, most preferred first: the
    ritual's own list if it has one, else the partner's; only channels the partner chose."""
    return [ch for ch in (ritual_channels or partner_channels) if ch in partner_channels]


def legs(
    ritual_channels: Sequence[str],
    partner_channels: Sequence[str],
    usable: Collection[str],
    both: bool,
) -> list[Leg]:
    """The planned legs of one nudge: the first usable channel at rank 0, each next one a
    standby of the next rank (``both``: every usable channel at rank 0)."""
    chosen = [ch for ch in order(ritual_channels, partner_channels) if ch in usable]
    return [Leg(ch, 0 if both else i) for i, ch in enumerate(chosen)]


def blocked(p: Partner, ch: Channel) -> str | None:
    """Why ``p`` cannot be reached on ``ch`` now (None: they can)."""
    if ch is Channel.SMS:
        if not p.phone:
            return "no phone number"
        if p.sms_consent is ConsentState.OPTED_OUT:
            return "replied STOP"
        if p.sms_consent is not ConsentState.CONSENTED:
            return "no consent recorded"
    elif not p.email:
        return "no email address"
    elif p.email_opted_out_at is not None:
        return "unsubscribed"
    return None


def describe(p: Partner, ritual: Ritual | None = None) -> str:
    """The route in words: "sms, then email if sms cannot deliver", "sms and email (both
    asked for)", "email (sms: replied STOP)", "none (email: unsubscribed)"."""
    own = [c.value for c in p.channel_list]
    wanted = order([c.value for c in ritual.channel_list] if ritual else [], own)
    if not wanted:
        return "none (no channel chosen)"
    reasons = {ch: blocked(p, Channel(ch)) for ch in wanted}
    usable = [ch for ch in wanted if reasons[ch] is None]
    why = ", ".join(f"{ch}: {r}" for ch, r in reasons.items() if r is not None)
    tail = f" ({why})" if why else ""
    if not usable:
        return "none" + tail
    if len(usable) == 1:
        return usable[0] + tail
    if p.both_channels:
        return " and ".join(usable) + " (both asked for)" + tail
    first, rest = usable[0], usable[1:]
    return f"{first}, then {' then '.join(rest)} if {first} cannot deliver" + tail


def short(p: Partner, ritual: Ritual | None = None) -> str:
    """The route for a table cell: "via sms", "via sms, else email", "via sms + email",
    "no channel"."""
    own = [c.value for c in p.channel_list]
    wanted = order([c.value for c in ritual.channel_list] if ritual else [], own)
    usable = [ch for ch in wanted if blocked(p, Channel(ch)) is None]
    if not usable:
        return "no channel"
    joint = " + " if p.both_channels else ", else "
    return "via " + joint.join(usable)
