"""A user's typed tasks, as mypy sees them (checked by tests/test_typing.py, never run)."""

from __future__ import annotations

import pydantic

import taskora

app = taskora.App("memory://")


class Email(pydantic.BaseModel):
    to: str
    subject: str = "hello"


class Sent(pydantic.BaseModel):
    message_id: str


@app.task("send-email")
async def send_email(data: Email, ctx: taskora.Context) -> Sent:
    return Sent(message_id=f"m-{data.to}")


@app.task
def count_words(data: str) -> int:
    return len(data.split())


contract = taskora.define_task("resize", input=Email, output=Sent)
registered = app.register(contract)


async def producer() -> None:
    handle = send_email.dispatch(Email(to="a@example.com"))
    job_id: str = await handle
    sent: Sent = await handle.result
    words: int = await count_words.dispatch("one two").wait_for("5s")
    again: Sent = await registered.dispatch(Email(to="b@example.com")).result
    print(job_id, sent.message_id, words, again)
