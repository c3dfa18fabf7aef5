"""Pytest fixtures for the local peers; import them into a conftest or test module.

from tests.peers.fixtures import smtp_sink, twilio_standin  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.peers.smtp_sink import SmtpSink
from tests.peers.twilio_standin import TwilioStandIn


@pytest.fixture
def twilio_standin() -> Iterator[TwilioStandIn]:
    """A started :class:`TwilioStandIn` (default account sid and token), stopped after."""
    with TwilioStandIn() as standin:
        yield standin


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A started :class:`SmtpSink` without AUTH, stopped after."""
    with SmtpSink() as sink:
        yield sink
