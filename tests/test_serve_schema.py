"""schemathesis against the service's own OpenAPI schema: generated requests (valid and invalid) to
every operation find no 5xx, no answer outside the schema and no invalid request accepted. Bounded:
a few examples per operation, on a private copy of the served shapes store."""

from __future__ import annotations

import sys

import pytest

schemathesis = pytest.importorskip("schemathesis")

from helpers import copy_store  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from asif_vdb import AsifClient  # noqa: E402
from asif_vdb.serve import Service, Settings, create_app  # noqa: E402

KEY = "schema-test-key"
#: Examples per operation and phase: enough to reach every parameter, bounded in time.
EXAMPLES = 3
#: Requests sent, reported when the module ends (run with -s to see it).
SENT = [0]
CONFIG = schemathesis.Config.from_dict({
    "auth": {"openapi": {"APIKeyHeader": {"api_key": KEY}}},
    # Schema-valid is not always valid: a query is a text or an image, a vector has the encoder's
    # dimension, a label set exists. Those are 4xx answers with a reason (test_serve_api.py); what is
    # checked here is no 5xx, answers as documented, and no schema-invalid request accepted.
    "checks": {"positive_data_acceptance": {"enabled": False}},
    # a file part "negated" to null is sent as the bytes 'null': a valid (if odd) file, not a schema
    # violation, so uploads are not held to rejecting it
    "operations": [{"include-path-regex": "^/(search|classify|explain|anchors)$",
                    "checks": {"negative_data_rejection": {"enabled": False}}},
                   # a backup writes a folder on the service's machine: not fuzzed (test_backup.py)
                   {"include-path": "/backup", "enabled": False}],
})


@pytest.fixture(scope="module")
def api_schema(served_shapes, tmp_path_factory):
    store, _, _ = served_shapes
    copy = copy_store(store, tmp_path_factory.mktemp("schema") / "store")
    client = AsifClient(copy)
    app = create_app(Service(client, Settings(api_key=KEY, uploads=copy / "uploads", max_files=4)))
    yield schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    client.close()
    print(f"\nschemathesis: {SENT[0]} requests", file=sys.stderr)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_the_api_keeps_its_schema(case) -> None:
    SENT[0] += 1
    case.call_and_validate()
