"""Where NATS and Postgres come from: the environment, else testcontainers when Docker answers, else embedded."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mtm.devstack.embedded import EmbeddedNats, EmbeddedPostgres
from mtm.platform.logging import get_logger

log = get_logger(__name__)

NATS_IMAGE = "nats:2.11-alpine"
POSTGRES_IMAGE = "postgres:16-alpine"
Origin = Literal["environment", "testcontainers", "embedded"]


@dataclass
class Infrastructure:
    nats_url: str
    database_url: str
    nats_origin: Origin
    database_origin: Origin
    _stops: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def stop(self) -> None:
        for stop in reversed(self._stops):
            with contextlib.suppress(Exception):
                stop()
        self._stops.clear()


def docker_engine_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def resolve_infrastructure(data_dir: Path, *, use_containers: bool = True) -> Infrastructure:
    """Resolve each of NATS and Postgres independently in the order environment → containers → embedded."""
    nats_url = os.environ.get("MTM_NATS_URL")
    database_url = os.environ.get("MTM_DATABASE_URL")
    infra = Infrastructure(
        nats_url=nats_url or "",
        database_url=database_url or "",
        nats_origin="environment",
        database_origin="environment",
    )
    containers = use_containers and (nats_url is None or database_url is None) and docker_engine_answers()
    try:
        if nats_url is None:
            if containers:
                infra.nats_url, stop = _nats_container()
                infra.nats_origin = "testcontainers"
                infra._stops.append(stop)
            else:
                server = EmbeddedNats(data_dir / "nats")
                # Registered before it starts: an interrupted or failed start still stops what came up.
                infra._stops.append(server.stop)
                infra.nats_url = server.start().url
                infra.nats_origin = "embedded"
        if database_url is None:
            if containers:
                infra.database_url, stop = _postgres_container()
                infra.database_origin = "testcontainers"
                infra._stops.append(stop)
            else:
                pg = EmbeddedPostgres(data_dir / "postgres")
                infra._stops.append(pg.stop)
                infra.database_url = pg.start().url
                infra.database_origin = "embedded"
    except BaseException:
        infra.stop()
        raise
    return infra


def _nats_container() -> tuple[str, Callable[[], None]]:
    from testcontainers.community.nats import NatsContainer

    container = NatsContainer(NATS_IMAGE, jetstream=True).start()
    return container.nats_uri(), container.stop


def _postgres_container() -> tuple[str, Callable[[], None]]:
    from testcontainers.community.postgres import PostgresContainer

    container = PostgresContainer(POSTGRES_IMAGE, username="postgres", password="postgres", dbname="postgres").start()
    return container.get_connection_url(driver=None), container.stop
