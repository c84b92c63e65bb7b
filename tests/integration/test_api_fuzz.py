"""schemathesis against the live HTTPS API, from the API's own OpenAPI schema: for every operation,
requests generated from its parameters and bodies (an admin's credentials, so that most reach the
code behind authorisation), each answer checked: never a server error, its status declared, its
content type and body as the schema says. A bounded run (`EXAMPLES` an operation, derandomized).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from cloud.api import _secrets, operator
from tests.support.apikit import PASSWORD, Api, add_box, add_samples, serving

EXAMPLES = 20
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with serving(tmp_path_factory.mktemp("fuzz")) as api:
        st = api.cloud.store
        a, _ = operator.create_account(st, "acme", "owner@acme", PASSWORD)
        add_box(api.cloud, "BOX-X", "acme", ("north",))
        add_samples(api.cloud, "BOX-X", ["temp"], 1_700_000_000_000, 10)
        uid = st.add_user(a.id, "fuzzer@acme", "user", _secrets.hash_password(PASSWORD))
        for _ in range(3):  # a binding deleted by a generated request leaves the others
            st.bind(a.id, uid, "admin", "account", "")
        yield api


def test_schemathesis_finds_no_server_error_and_no_schema_violation(api: Api) -> None:
    doc = api.session().get(api.url + "/v1/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    session = api.session("fuzzer@acme")
    operations = [r.ok() for r in schema.get_all_operations()]  # type: ignore[union-attr] # an error: the test fails
    operations.sort(key=lambda op: op.method.upper() == "DELETE")  # deletions last: they take away
    failures: list[str] = []
    calls = 0
    for op in operations:
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def run(case: Any) -> None:
            nonlocal calls
            calls += 1
            response = case.call(base_url=api.url, session=session, timeout=30, verify=str(api.cloud.pki.root_cert))
            try:
                case.validate_response(response, checks=CHECKS)
            except (AssertionError, FailureGroup) as e:  # what schemathesis's checks found
                said = " | ".join(line for line in str(e).splitlines()[:6] if line.strip())
                failures.append(f"{case.method} {case.path}: {said[:400]}")

        run()
    print(f"schemathesis: {len(operations)} operations, {calls} requests, {len(failures)} findings")
    assert failures == [], "\n".join(sorted(set(failures)))
