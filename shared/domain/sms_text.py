"""How a text travels as SMS: GSM-7 when every character is in GSM 03.38, else UCS-2, and a
long text split into concatenated parts that carry one reference in their UDH.

GSM-7 goes unpacked, one septet per octet (SMPP's data_coding 0, the SMSC's default alphabet);
extension characters (`€`, `[`, ...) take an escape septet and never end a part half-way.
UCS-2 is UTF-16 big-endian; a surrogate pair (an emoji) never ends a part half-way either.
Used by the SMPP client and by the pre-send check (segments per message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

# GSM 03.38 basic set in code order (0x1B, the escape to the extension table, is a space here).
_GSM7_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_BASIC = {ch: code for code, ch in enumerate(_GSM7_TABLE) if code != 0x1B}
GSM7_EXTENSION = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
ESCAPE = 0x1B

# Units per SMS: septets (GSM-7) or UTF-16 code units (UCS-2); with a 6-octet concatenation
# UDH (8-bit reference) a part holds 153 septets or 67 code units.
SINGLE = {"GSM-7": 160, "UCS-2": 70}
MULTI = {"GSM-7": 153, "UCS-2": 67}
MAX_PARTS = 255
DATA_CODING = {"GSM-7": 0x00, "UCS-2": 0x08}
_IEI_CONCAT_8BIT = 0x00


def encoding_of(text: str) -> Encoding:
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        return "GSM-7"
    return "UCS-2"


def _units(text: str, encoding: Encoding) -> list[bytes]:
    """Each character as its indivisible run of octets: one or two septets, or one or two
    UTF-16 code units (two for characters outside the basic plane)."""
    if encoding == "GSM-7":
        return [
            bytes([GSM7_BASIC[ch]]) if ch in GSM7_BASIC else bytes([ESCAPE, GSM7_EXTENSION[ch]])
            for ch in text
        ]
    return [ch.encode("utf-16-be") for ch in text]


def _unit_size(encoding: Encoding) -> int:
    return 1 if encoding == "GSM-7" else 2


@dataclass(frozen=True, slots=True)
class SmsParts:
    encoding: Encoding
    data_coding: int  # SMPP data_coding: 0 (SMSC default, GSM-7) or 8 (UCS-2)
    bodies: tuple[bytes, ...]  # each part's octets, without UDH
    texts: tuple[str, ...]  # each part's text (for logs and tests)

    @property
    def count(self) -> int:
        return len(self.bodies)

    def short_messages(self, reference: int) -> list[bytes]:
        """Each part's short_message: the body alone for one part, else a concatenation UDH
        (IEI 0x00, 8-bit `reference`, total, sequence number) before it; set esm_class's UDHI
        bit (0x40) on those."""
        if self.count == 1:
            return [self.bodies[0]]
        if not 0 <= reference <= 255:
            raise ValueError("the reference of an 8-bit concatenation UDH is 0..255")
        return [
            bytes([5, _IEI_CONCAT_8BIT, 3, reference, self.count, seq]) + body
            for seq, body in enumerate(self.bodies, start=1)
        ]


def split_sms(text: str) -> SmsParts:
    """The text's encoding and its parts (one when it fits a single SMS)."""
    if not text:
        raise ValueError("an SMS needs some text")
    encoding = encoding_of(text)
    units = _units(text, encoding)
    size = _unit_size(encoding)
    total = sum(len(u) for u in units) // size
    if total <= SINGLE[encoding]:
        return SmsParts(encoding, DATA_CODING[encoding], (b"".join(units),), (text,))
    limit = MULTI[encoding] * size
    bodies: list[bytes] = []
    texts: list[str] = []
    body = bytearray()
    start = 0
    for index, unit in enumerate(units):
        if len(body) + len(unit) > limit:
            bodies.append(bytes(body))
            texts.append(text[start:index])
            body = bytearray()
            start = index
        body += unit
    bodies.append(bytes(body))
    texts.append(text[start:])
    if len(bodies) > MAX_PARTS:
        raise ValueError(f"the text needs {len(bodies)} parts; at most {MAX_PARTS} are possible")
    return SmsParts(encoding, DATA_CODING[encoding], tuple(bodies), tuple(texts))


def segment_count(text: str) -> int:
    """How many SMS the text takes (the count an operator bills)."""
    return split_sms(text).count if text else 0


def decode_gsm7(octets: bytes) -> str:
    """Unpacked GSM-7 octets back to text (an unknown escape gives the basic character)."""
    reverse = {code: ch for ch, code in GSM7_BASIC.items()}
    extension = {code: ch for ch, code in GSM7_EXTENSION.items()}
    out: list[str] = []
    escaped = False
    for octet in octets:
        if escaped:
            out.append(extension.get(octet, reverse.get(octet, "?")))
            escaped = False
        elif octet == ESCAPE:
            escaped = True
        else:
            out.append(reverse.get(octet, "?"))
    return "".join(out)
