"""The service's history test (tests/test_service.py) again, with the server's history on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from service_support import thread_server
from test_service import (  # noqa: F401  (models: a fixture; the test: run again here)
    LIMITS,
    models,
    test_generations_are_recorded_and_searchable,
)

from chargen.checkpoint import Checkpoint
from chargen.service import create_app


@pytest.fixture(scope="module")
def history_url(models: dict[str, Checkpoint], postgres_server) -> Iterator[str]:  # noqa: F811
    with postgres_server.database() as database, \
            thread_server(create_app(models, database, None, LIMITS)) as base:
        yield base
