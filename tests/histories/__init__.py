"""Generated histories: Hypothesis' stateful testing drives the real planner, dispatcher,
webhooks and partner page against real SQLite or PostgreSQL, the Twilio stand-in and the
SMTP sink, with the fake clock; after every step the oracle checks what the providers
accepted (docs/architecture.md, "Generated histories").

:mod:`world` holds the servers and the running Hearth for one database, :mod:`model` what the
history did, :mod:`oracle` the invariants, :mod:`machine` the rules, :mod:`runner` the
profiles and the loop `make simulate` runs.
"""
