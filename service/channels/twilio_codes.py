"""Twilio error codes, mapped to our retry classes in one place (no SDK import).

:data:`PERMANENT`, :data:`OPTED_OUT` and :data:`TRANSIENT` name the codes we know; HTTP status
decides for codes not listed (429 and 5xx retry, other 4xx do not). The send path and the
delivery receipts both read these tables.
"""

from __future__ import annotations

from service.channels.base import TransportError

PERMANENT = {
    21211: "invalid 'To' number",
    21408: "region not enabled for this account",
    21614: "number cannot receive SMS",
    30005: "unknown destination handset",
    30006: "landline or unreachable carrier",
}
OPTED_OUT = {21610: "recipient replied STOP"}
TRANSIENT = {
    20429: "too many requests",
    30001: "provider queue overflow",
    30003: "handset unreachable",
}


UNKNOWN_STATUS = {502, 504}  # a gateway's answer: whether the API acted on it is unknown


def classify(status: int, code: int | None, retry_after: float | None) -> TransportError:
    """One place that turns a Twilio answer into our error class."""
    if code in OPTED_OUT:
        return TransportError(f"twilio {code}: {OPTED_OUT[code]}", opted_out=True, code=str(code))
    if code in PERMANENT:
        return TransportError(f"twilio {code}: {PERMANENT[code]}", permanent=True, code=str(code))
    label = f"twilio {code or status}"
    if code in TRANSIENT:
        return TransportError(
            f"{label}: {TRANSIENT[code]}", retry_after=retry_after, code=str(code)
        )
    if status in UNKNOWN_STATUS:
        # A proxy or gateway lost the answer; the API behind it may have taken the message.
        return TransportError(f"{label}: HTTP {status}", unknown=True, code=str(code or status))
    if status == 429 or status >= 500:
        return TransportError(
            f"{label}: HTTP {status}", retry_after=retry_after, code=str(code or status)
        )
    return TransportError(f"{label}: HTTP {status}", permanent=True, code=str(code or status))
