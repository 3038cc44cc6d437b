"""Schemathesis against the app's own OpenAPI document (in-process ASGI): no input, however
malformed or oversized, gets a 5xx, and with every check on (status codes, content types and
response schemas as documented, invalid data rejected, valid data accepted, auth enforced) there
are no failures. Bounded examples keep it around a minute."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from service.api.app import create_app
from service.settings import Settings
from service.store import Store

_TMP = Path(tempfile.mkdtemp(prefix="rnnhpo-fuzz-"))
_URL = f"sqlite:///{_TMP / 'fuzz.db'}"
TOKEN = "fuzz-token"


def _app():
    store = Store(_URL)
    app = create_app(Settings(database_url=_URL, data_dir=_TMP / "data", max_body_bytes=50_000,
                              max_trials_per_experiment=500, api_token=TOKEN), store=store)
    # a real experiment with trials and traces, so the read routes have something behind them
    from test_api import SPEC, fake_results  # tests/ is on sys.path (rootdir import mode)

    exp_id = store.create_experiment("fuzz", SPEC, n_trials_total=12)
    fake_results(store, exp_id, steps=20)
    return app


APP = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.auth()
class _Bearer:
    """Valid cases carry the token; schemathesis also sends them without it (ignored_auth)."""

    def get(self, case, context):
        return TOKEN

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    import shutil

    shutil.rmtree(_TMP, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    case.call_and_validate(checks=[not_a_server_error])


@schema.parametrize()
@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_all_checks(case):
    """Every check, with one exception that is not a defect: POST /experiments refuses some
    schema-valid specs on purpose (validation at the edge: unknown dataset names, the trainer's
    limits on searched values, the trial budget), rules a JSON Schema cannot state. Rejecting
    schema-INVALID input (negative data) is checked, on every route."""
    from schemathesis.checks import positive_data_acceptance

    if case.operation.method.upper() == "POST" and case.operation.path == "/api/v1/experiments":
        case.call_and_validate(excluded_checks=[positive_data_acceptance])
    else:
        case.call_and_validate()
