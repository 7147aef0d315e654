"""A stream create that races the server's teardown of a stream deleted moments before is tried again."""

from __future__ import annotations

import pytest
from nats.js.api import StreamConfig
from nats.js.errors import ServerError

from mtm.platform import streams

pytestmark = pytest.mark.unit


class JetStream:
    """Refuses the first `failures` creates as nats-server does when a stream's store could not be created."""

    def __init__(self, failures: int, err_code: int = streams.STORE_NOT_CREATED) -> None:
        self.failures = failures
        self.err_code = err_code
        self.attempts = 0

    async def add_stream(self, config: StreamConfig) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ServerError(code=500, err_code=self.err_code, description="error creating store for stream")


@pytest.fixture(autouse=True)
def no_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "backoff", lambda attempt: 0.0)


async def test_a_store_not_created_is_tried_again_until_it_is() -> None:
    js = JetStream(failures=2)
    await streams.add_stream(js, StreamConfig(name="PATIENT_EVENTS"))  # type: ignore[arg-type]
    assert js.attempts == 3


async def test_a_store_never_created_fails_after_the_last_attempt() -> None:
    js = JetStream(failures=streams.ADD_STREAM_ATTEMPTS)
    with pytest.raises(ServerError):
        await streams.add_stream(js, StreamConfig(name="PATIENT_EVENTS"))  # type: ignore[arg-type]
    assert js.attempts == streams.ADD_STREAM_ATTEMPTS


async def test_another_server_error_is_not_tried_again() -> None:
    js = JetStream(failures=1, err_code=10047)  # insufficient resources: trying again will not help
    with pytest.raises(ServerError):
        await streams.add_stream(js, StreamConfig(name="PATIENT_EVENTS"))  # type: ignore[arg-type]
    assert js.attempts == 1
