"""Pytest fixtures for the local peers; import them into a conftest or test module.

from tests.peers.fixtures import smtp_sink, twilio_standin  # noqa: F401
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.peers import imap_server
from tests.peers.imap_server import DovecotServer
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


@pytest.fixture(scope="session")
def _dovecot() -> Iterator[DovecotServer]:
    if not imap_server.available():
        reason = f"{imap_server.DOVECOT} is missing (apt-get install dovecot-imapd)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true requires the IMAP server: {reason}")
        pytest.skip(reason)
    with DovecotServer() as server:
        yield server


@pytest.fixture
def dovecot(_dovecot: DovecotServer) -> DovecotServer:
    """A real IMAP server (Dovecot on 127.0.0.1), its mailboxes emptied for each test."""
    _dovecot.empty()
    return _dovecot
