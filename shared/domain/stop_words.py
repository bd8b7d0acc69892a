"""Replies by SMS that opt a client out: a reply that is exactly a stop word, case and the
spaces around it ignored (`STOP`, ` стоп `), opts out; a text that merely contains one
("don't stop") does not."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

DEFAULT_STOP_WORDS = ("STOP", "СТОП", "ОТПИСКА")


def _normal(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip().casefold()


def stop_word_set(words: Iterable[str]) -> frozenset[str]:
    """The configured words as compared (empty entries dropped)."""
    return frozenset(w for w in (_normal(word) for word in words) if w)


def is_stop_reply(text: str, stop_words: frozenset[str]) -> bool:
    return _normal(text) in stop_words
