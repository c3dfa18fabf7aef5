"""SMS segment counting: what a text costs and whether it fits (GSM-7 or UCS-2)."""

from __future__ import annotations

# GSM 03.38 basic set plus the extension table (which costs two septets each).
_GSM = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXT = set("^{}\\[~]|€")
MAX_SEGMENTS = 2


def segments(text: str) -> int:
    """How many SMS segments ``text`` takes."""
    if all(ch in _GSM or ch in _GSM_EXT for ch in text):
        units = sum(2 if ch in _GSM_EXT else 1 for ch in text)
        single, multi = 160, 153
    else:
        units = sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)
        single, multi = 70, 67
    if units <= single:
        return 1
    return -(-units // multi)


def gsm_only(text: str) -> str:
    """``text`` without the characters that would switch it to UCS-2."""
    return "".join(ch for ch in text if ch in _GSM or ch in _GSM_EXT)
