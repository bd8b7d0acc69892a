"""SMS encoding and concatenation: GSM-7 or UCS-2, parts that never split a character."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.sms_text import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    decode_gsm7,
    encoding_of,
    segment_count,
    split_sms,
)
from shared.domain.text import segment_text

GSM_CHARS = "".join(GSM7_BASIC) + "".join(GSM7_EXTENSION)


@pytest.mark.parametrize(
    ("text", "encoding", "parts"),
    [
        ("Hello", "GSM-7", 1),
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("€" * 80, "GSM-7", 1),  # 160 septets
        ("€" * 81, "GSM-7", 2),
        ("Привет", "UCS-2", 1),
        ("я" * 70, "UCS-2", 1),
        ("я" * 71, "UCS-2", 2),
        ("я" * 134, "UCS-2", 2),
        ("я" * 135, "UCS-2", 3),
        ("Hi 😀", "UCS-2", 1),  # outside GSM; the emoji is two UTF-16 code units
    ],
)
def test_encoding_and_parts(text: str, encoding: str, parts: int) -> None:
    sms = split_sms(text)
    assert (sms.encoding, sms.count) == (encoding, parts)
    assert segment_count(text) == parts
    assert sms.data_coding == (0 if encoding == "GSM-7" else 8)


def test_gsm7_is_unpacked_septets_with_escapes() -> None:
    sms = split_sms("@A€")
    assert sms.bodies == (bytes([0x00, 0x41, 0x1B, 0x65]),)
    assert decode_gsm7(sms.bodies[0]) == "@A€"


def test_ucs2_is_big_endian_utf16() -> None:
    assert split_sms("Я").bodies == ("Я".encode("utf-16-be"),)


def test_an_escape_pair_never_ends_a_part() -> None:
    text = "a" * 152 + "€" + "b" * 10  # the euro would straddle septets 153 and 154
    sms = split_sms(text)
    assert len(sms.bodies[0]) == 152
    assert sms.texts == ("a" * 152, "€" + "b" * 10)


def test_a_surrogate_pair_never_ends_a_part() -> None:
    text = "я" * 66 + "😀" + "я" * 10  # the emoji would straddle code units 67 and 68
    sms = split_sms(text)
    assert len(sms.bodies[0]) == 66 * 2
    assert sms.texts[1].startswith("😀")


def test_concatenation_udh_carries_one_reference() -> None:
    sms = split_sms("я" * 150)
    messages = sms.short_messages(reference=42)
    assert [m[:6] for m in messages] == [bytes([5, 0, 3, 42, 3, seq]) for seq in (1, 2, 3)]
    assert b"".join(m[6:] for m in messages).decode("utf-16-be") == "я" * 150
    assert split_sms("short").short_messages(reference=42) == [b"short"]
    with pytest.raises(ValueError, match=r"0\.\.255"):
        sms.short_messages(reference=256)


def test_empty_text_is_refused() -> None:
    with pytest.raises(ValueError, match="needs some text"):
        split_sms("")
    assert segment_count("") == 0


@given(st.text(alphabet=GSM_CHARS, min_size=1, max_size=800))
def test_gsm_texts_round_trip_and_fit(text: str) -> None:
    sms = split_sms(text)
    assert encoding_of(text) == "GSM-7"
    assert "".join(sms.texts) == text
    assert decode_gsm7(b"".join(sms.bodies)) == text
    limit = 160 if sms.count == 1 else 153
    assert all(len(body) <= limit for body in sms.bodies)
    assert all(decode_gsm7(body) == part for body, part in zip(sms.bodies, sms.texts, strict=True))


@given(st.text(min_size=1, max_size=600).filter(lambda t: encoding_of(t) == "UCS-2"))
def test_ucs2_texts_round_trip_and_fit(text: str) -> None:
    sms = split_sms(text)
    assert "".join(sms.texts) == text
    assert all(
        body.decode("utf-16-be") == part for body, part in zip(sms.bodies, sms.texts, strict=True)
    )
    limit = 140 if sms.count == 1 else 134
    assert all(len(body) <= limit for body in sms.bodies)


@given(st.text(alphabet="abcя€ ", min_size=1, max_size=400))
def test_agrees_with_the_existing_segment_rule_when_no_character_straddles(text: str) -> None:
    # shared.domain.text counts units; the two differ only when a two-unit character would
    # straddle a part boundary, which costs the real split one more part at most.
    assert segment_text(text).segments <= segment_count(text) <= segment_text(text).segments + 1
