"""A reply opts out only when it is exactly a stop word (case and surrounding spaces aside)."""

from __future__ import annotations

import pytest

from shared.domain.stop_words import DEFAULT_STOP_WORDS, is_stop_reply, stop_word_set

WORDS = stop_word_set(DEFAULT_STOP_WORDS)


@pytest.mark.parametrize(
    "text", ["STOP", "stop", " Stop \n", "СТОП", "стоп", "  отписка", "Stop\t"]
)
def test_exact_stop_words_opt_out(text: str) -> None:
    assert is_stop_reply(text, WORDS)


@pytest.mark.parametrize(
    "text", ["don't stop", "STOP please", "STOPP", "S T O P", "стоп-кран", "", "   ", "STOP."]
)
def test_texts_that_merely_contain_one_do_not(text: str) -> None:
    assert not is_stop_reply(text, WORDS)


def test_configured_words_replace_the_defaults() -> None:
    words = stop_word_set(["unsubscribe", " ", "Хватит "])
    assert is_stop_reply("UNSUBSCRIBE", words) and is_stop_reply("хватит", words)
    assert not is_stop_reply("stop", words)
    assert "" not in words
