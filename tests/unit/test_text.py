"""SMS segmentation: GSM-7 160/153 septets, UCS-2 70/67 UTF-16 code units."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.text import MAX_TEXT_LENGTH, segment_text

GSM_BASIC_SAMPLE = "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡AZÄÖÑÜ§¿azäöñüà"
GSM_EXTENSION = "^{}\\[~]|€\f"


def test_max_text_length_is_1000() -> None:
    assert MAX_TEXT_LENGTH == 1000


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (159, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4), (1000, 7)],
)
def test_gsm7_single_160_multi_153(length: int, segments: int) -> None:
    seg = segment_text("a" * length)
    assert (seg.encoding, seg.units, seg.segments) == ("GSM-7", length, segments)


def test_every_gsm_basic_character_is_one_septet() -> None:
    seg = segment_text(GSM_BASIC_SAMPLE + "\n\r")
    assert seg.encoding == "GSM-7"
    assert seg.units == len(GSM_BASIC_SAMPLE) + 2


@pytest.mark.parametrize("ch", list(GSM_EXTENSION))
def test_extension_characters_count_two_septets(ch: str) -> None:
    seg = segment_text("ab" + ch)
    assert (seg.encoding, seg.units) == ("GSM-7", 4)


def test_extension_characters_push_a_text_over_one_segment() -> None:
    assert segment_text("a" * 158 + "€").segments == 1  # 160 septets
    seg = segment_text("a" * 159 + "€")  # 161 septets in 160 characters
    assert (seg.units, seg.segments) == (161, 2)
    assert segment_text("{" * 80).segments == 1
    assert segment_text("{" * 81).segments == 2


@pytest.mark.parametrize(
    ("text", "units", "segments"),
    [
        ("Привет", 6, 1),
        ("Я" * 70, 70, 1),
        ("Я" * 71, 71, 2),
        ("Я" * 134, 134, 2),
        ("Я" * 135, 135, 3),
        ("Скидка 20% до воскресенья", 25, 1),
        ("a" * 159 + "Я", 160, 3),  # one non-GSM character makes the whole text UCS-2
        ("ç", 1, 1),  # lower-case c-cedilla is not in the GSM-7 basic set
    ],
)
def test_ucs2_single_70_multi_67(text: str, units: int, segments: int) -> None:
    seg = segment_text(text)
    assert (seg.encoding, seg.units, seg.segments) == ("UCS-2", units, segments)


def test_emoji_take_two_utf16_code_units() -> None:
    seg = segment_text("🙂")
    assert (seg.encoding, seg.units, seg.segments) == ("UCS-2", 2, 1)
    assert segment_text("🙂" * 35).segments == 1  # 70 units
    seg = segment_text("🙂" * 36)  # 72 units
    assert (seg.units, seg.segments) == (72, 2)
    seg = segment_text("Привет 👋")
    assert (seg.units, seg.segments) == (9, 1)


def test_empty_text_is_one_gsm_segment() -> None:
    seg = segment_text("")
    assert (seg.encoding, seg.units, seg.segments) == ("GSM-7", 0, 1)


@given(st.text(max_size=MAX_TEXT_LENGTH))
def test_segmentation_properties(text: str) -> None:
    seg = segment_text(text)
    if seg.encoding == "GSM-7":
        assert len(text) <= seg.units <= 2 * len(text)
        single, multi = 160, 153
    else:
        assert seg.encoding == "UCS-2"
        assert seg.units == len(text.encode("utf-16-le", "surrogatepass")) // 2
        single, multi = 70, 67
    if seg.units <= single:
        assert seg.segments == 1
    else:
        # Enough segments to hold every unit, and not one more.
        assert seg.segments * multi >= seg.units > (seg.segments - 1) * multi


@given(st.text(alphabet=GSM_BASIC_SAMPLE + GSM_EXTENSION, max_size=400))
def test_gsm_alphabet_text_stays_gsm7(text: str) -> None:
    seg = segment_text(text)
    assert seg.encoding == "GSM-7"
    assert seg.units == len(text) + sum(ch in GSM_EXTENSION for ch in text)
