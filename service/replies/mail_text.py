"""What a partner wrote in an email reply: the new words, without quote, signature or markup.

The text/plain part is preferred; an HTML-only message is turned into text here (quoted
blocks and styles dropped). Quoted mail and signatures are cut by ``mail-parser-reply``
(Gmail's "On ... wrote:", Outlook's "-----Original Message-----" and "From:/Sent:" blocks,
"-- " signatures, in the partner's language and English). Two things it misses are cut
after it: lines quoted with ">" and the attribution line above them (Gmail's Spanish
"El ... escribió:"), and phone signatures such as "Von meinem iPhone gesendet".
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from html.parser import HTMLParser

from mailparser_reply import EmailReplyParser

MAX_TEXT = 4000  # more is never a reply to a question; it is cut before parsing
# Phone and app signatures on a line of their own, in the languages Hearth speaks.
SENT_FROM = re.compile(
    r"^(sent from my .*|get outlook for .*|von meinem .* gesendet|gesendet von .*"
    r"|enviado desde mi .*|obtener outlook para .*)$",
    re.IGNORECASE,
)


def is_automatic(msg: EmailMessage) -> bool:
    """Sent by a machine (a vacation reply, a bounce, a list): never answered."""
    if str(msg.get("Auto-Submitted", "no")).strip().lower() != "no":
        return True
    if str(msg.get("Precedence", "")).strip().lower() in ("bulk", "junk", "list", "auto_reply"):
        return True
    return any(msg.get(h) is not None for h in ("X-Autoreply", "X-Autorespond", "List-Id"))


def body_text(msg: EmailMessage) -> str:
    """The message's text: its text/plain part, else its HTML part as text."""
    part = msg.get_body(preferencelist=("plain", "html"))
    if not isinstance(part, EmailMessage):
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown charset or a broken encoding
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    if not isinstance(content, str):
        return ""
    if part.get_content_subtype() == "html":
        return html_to_text(content[: MAX_TEXT * 10])
    return content


class _Text(HTMLParser):
    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "table"})
    SKIP = frozenset({"blockquote", "style", "script", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = next((v or "" for k, v in attrs if k == "class"), "")
        if tag in self.SKIP or (self.skipping and tag == "div") or "gmail_quote" in classes:
            self.skipping += 1
        elif tag in self.BLOCKS:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if self.skipping and (tag in self.SKIP or tag == "div"):
            self.skipping -= 1
        elif tag in self.BLOCKS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.out.append(data)


def html_to_text(markup: str) -> str:
    """Readable text of an HTML body; quoted blocks (blockquote, Gmail's quote) left out."""
    parser = _Text()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.out).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def new_words(text: str, language: str) -> str:
    """The part of a reply the partner just wrote."""
    text = text[:MAX_TEXT].replace("\r\n", "\n")
    parsed = EmailReplyParser(languages=[language, "en"]).read(text)
    latest = parsed.replies[0].body if parsed.replies else text
    lines = latest.split("\n")
    quoted = next((i for i, line in enumerate(lines) if line.lstrip().startswith(">")), None)
    if quoted is not None:
        lines = lines[:quoted]
        while lines and not lines[-1].strip():
            lines.pop()
        if lines and lines[-1].rstrip().endswith(":"):
            lines.pop()  # the attribution: "El lun, 7 dic 2026, Hearth (<...>) escribió:"
    kept = [line for line in lines if not SENT_FROM.match(line.strip())]
    return "\n".join(kept).strip()
