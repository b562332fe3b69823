"""Deliberate mistakes mypy must report (tests/test_typing.py counts them by line)."""

from __future__ import annotations

from tests.typing.typed_example import Email, count_words, registered, send_email


async def mistakes() -> None:
    send_email.dispatch(42)  # WRONG: arg-type
    count_words.dispatch(Email(to="x"))  # WRONG: arg-type
    words: str = await count_words.dispatch("a").result  # WRONG: assignment
    registered.dispatch("not an email")  # WRONG: arg-type
    print(words)
