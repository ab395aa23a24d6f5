"""HTTP as daprd's Go `net/http` server and its header handling do it, where uvicorn differs.

- Go's server adds `Date` only when the handler set none (uvicorn always adds its own), and,
  when a handler writes a body without a `Content-Type`, sets one sniffed from the first bytes
  with `http.DetectContentType` (the WHATWG MIME sniffing algorithm). daprd's invoke handler
  (`pkg/api/http/directmessaging.go`) copies the callee's headers except `Content-Type`, sets
  `Content-Type` only when the callee sent one, then writes the body: an app answering without
  `Content-Type` reaches its caller with the sniffed one (`text/plain; charset=utf-8` for JSON).
- Go reads a repeated request header with `Header.Get`, the first value; daprd carries headers
  between sidecars as metadata and writes only the first value of each back onto the request
  to the callee app and onto the response to the caller (`InternalMetadataToHTTPHeader`).
"""

from __future__ import annotations

from email.utils import formatdate
from typing import TYPE_CHECKING

from starlette.datastructures import MutableHeaders

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["GoServerHeaders", "detect_content_type", "first_value", "first_values"]

RawHeaders = list[tuple[bytes, bytes]]


def first_values(headers: RawHeaders) -> RawHeaders:
    """One header per name (compared without case), the first value of each, in order."""
    seen: set[bytes] = set()
    kept: RawHeaders = []
    for name, value in headers:
        lowered = name.lower()
        if lowered not in seen:
            seen.add(lowered)
            kept.append((lowered, value))
    return kept


def first_value(headers: RawHeaders, name: str) -> str | None:
    """`Header.Get(name)`: the first value of a header, or None."""
    wanted = name.lower().encode("latin-1")
    for key, value in headers:
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


# --- http.DetectContentType -------------------------------------------------------------------

_WHITESPACE = b"\t\n\x0c\r "
_SNIFF_LENGTH = 512
_HTML = "text/html; charset=utf-8"
_HTML_TAGS = (
    b"<!DOCTYPE HTML",
    b"<HTML",
    b"<HEAD",
    b"<SCRIPT",
    b"<IFRAME",
    b"<H1",
    b"<DIV",
    b"<FONT",
    b"<TABLE",
    b"<A",
    b"<STYLE",
    b"<TITLE",
    b"<B",
    b"<BODY",
    b"<BR",
    b"<P",
    b"<!--",
)
_RIFF = b"\xff\xff\xff\xff\x00\x00\x00\x00\xff\xff\xff\xff"
# (mask, pattern, content type): data & mask == pattern over the mask's length; in Go's order.
_MASKED_BEFORE = (
    (b"\xff\xff\x00\x00", b"\xfe\xff\x00\x00", "text/plain; charset=utf-16be"),
    (b"\xff\xff\x00\x00", b"\xff\xfe\x00\x00", "text/plain; charset=utf-16le"),
    (b"\xff\xff\xff\x00", b"\xef\xbb\xbf\x00", "text/plain; charset=utf-8"),
)
_EXACT_IMAGES = (
    (b"\x00\x00\x01\x00", "image/x-icon"),
    (b"\x00\x00\x02\x00", "image/x-icon"),
    (b"BM", "image/bmp"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_MASKED_MEDIA = (
    (_RIFF + b"\xff\xff", b"RIFF\x00\x00\x00\x00WEBPVP", "image/webp"),
    (b"\xff" * 8, b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xff\xff", b"\xff\xd8\xff", "image/jpeg"),
    (_RIFF, b"FORM\x00\x00\x00\x00AIFF", "audio/aiff"),
    (b"\xff\xff\xff", b"ID3", "audio/mpeg"),
    (b"\xff\xff\xff\xff\xff", b"OggS\x00", "application/ogg"),
    (b"\xff" * 8, b"MThd\x00\x00\x00\x06", "audio/midi"),
    (_RIFF, b"RIFF\x00\x00\x00\x00AVI ", "video/avi"),
    (_RIFF, b"RIFF\x00\x00\x00\x00WAVE", "audio/wave"),
)
_EXACT_AFTER = (
    (b"\x1a\x45\xdf\xa3", "video/webm"),
    (b"\x00\x01\x00\x00", "font/ttf"),
    (b"OTTO", "font/otf"),
    (b"ttcf", "font/collection"),
    (b"wOFF", "font/woff"),
    (b"wOF2", "font/woff2"),
    (b"\x1f\x8b\x08", "application/x-gzip"),
    (b"PK\x03\x04", "application/zip"),
    (b"Rar!\x1a\x07\x00", "application/x-rar-compressed"),
    (b"Rar!\x1a\x07\x01\x00", "application/x-rar-compressed"),
    (b"\x00\x61\x73\x6d", "application/wasm"),
)
_EOT = (b"\x00" * 34 + b"\xff\xff", b"\x00" * 34 + b"LP", "application/vnd.ms-fontobject")
_BINARY = frozenset([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x1B), *range(0x1C, 0x20)])


def _masked(data: bytes, mask: bytes, pattern: bytes) -> bool:
    if len(data) < len(mask):
        return False
    return all(data[i] & mask[i] == pattern[i] for i in range(len(mask)))


def _html(data: bytes) -> bool:
    for tag in _HTML_TAGS:
        if len(data) < len(tag) + 1:
            continue
        # A letter of the tag matches either case; the tag must end with a space or `>`.
        if (
            all(
                (got & 0xDF if 0x41 <= expected <= 0x5A else got) == expected
                for expected, got in zip(tag, data, strict=False)
            )
            and data[len(tag)] in b" >"
        ):
            return True
    return False


def _mp4(data: bytes) -> bool:
    if len(data) < 12:
        return False
    box = int.from_bytes(data[:4], "big")
    if len(data) < box or box % 4 != 0 or data[4:8] != b"ftyp":
        return False
    return any(data[at : at + 3] == b"mp4" for at in range(8, box, 4) if at != 12)


def detect_content_type(data: bytes) -> str:
    """The content type Go's `http.DetectContentType` gives the first bytes of a body."""
    data = data[:_SNIFF_LENGTH]
    stripped = data.lstrip(_WHITESPACE)
    if _html(stripped):
        return _HTML
    if stripped[:5] == b"<?xml":
        return "text/xml; charset=utf-8"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if data.startswith(b"%!PS-Adobe-"):
        return "application/postscript"
    for mask, pattern, found in _MASKED_BEFORE:
        if _masked(data, mask, pattern):
            return found
    for prefix, found in _EXACT_IMAGES:
        if data.startswith(prefix):
            return found
    for mask, pattern, found in _MASKED_MEDIA:
        if _masked(data, mask, pattern):
            return found
    if _mp4(data):
        return "video/mp4"
    for prefix, found in _EXACT_AFTER[:1]:
        if data.startswith(prefix):
            return found
    if _masked(data, _EOT[0], _EOT[1]):
        return _EOT[2]
    for prefix, found in _EXACT_AFTER[1:]:
        if data.startswith(prefix):
            return found
    if not any(byte in _BINARY for byte in stripped):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


# --- the server -----------------------------------------------------------------------------


def _body_allowed(status: int) -> bool:
    return not (100 <= status <= 199 or status in (204, 304))


class GoServerHeaders:
    """What Go's `net/http` server adds to a response: `Date` if missing, a sniffed type.

    Serve it with uvicorn's own `Date` header turned off (`date_header=False`).
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None

        async def send_like_go(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "date" not in headers:
                    headers["date"] = formatdate(usegmt=True)
                sniff = _body_allowed(message["status"]) and not any(
                    name in headers
                    for name in ("content-type", "content-encoding", "transfer-encoding")
                )
                if sniff:
                    # Hold the headers back until the first body bytes are known.
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                body: bytes = message.get("body", b"")
                if not body and message.get("more_body", False):
                    return  # nothing written yet: Go has not sent its headers either
                if body:
                    MutableHeaders(scope=held)["content-type"] = detect_content_type(body)
                start, held = held, None
                await send(start)
            await send(message)

        await self.app(scope, receive, send_like_go)
