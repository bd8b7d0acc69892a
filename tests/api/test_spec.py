"""The OpenAPI spec reads well for people and generators: clean unique operation ids, and every
operation with its error answers and examples."""

from __future__ import annotations

import re
from typing import Any

import pytest

from services.api.app import create_app
from services.api.events import NoEvents
from shared.settings import ApiSettings

SPEC: dict[str, Any] = create_app(ApiSettings(), events=NoEvents()).openapi()
OPERATIONS = [
    (method, path, operation)
    for path, item in SPEC["paths"].items()
    for method, operation in item.items()
]
API_OPERATIONS = [op for op in OPERATIONS if op[1].startswith("/api/v1/")]
# FastAPI's default: the function name, the path and the method, e.g.
# create_client_api_v1_clients_post.
FASTAPI_DEFAULT_ID = re.compile(r"_api_v1_|_(get|post|put|patch|delete)$")


def test_operation_ids_are_clean_unique_snake_case() -> None:
    ids = [operation["operationId"] for _, _, operation in OPERATIONS]
    assert len(ids) == len(set(ids)), sorted(ids)
    for method, path, operation in OPERATIONS:
        operation_id = operation["operationId"]
        assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", operation_id), (method, path)
        assert not FASTAPI_DEFAULT_ID.search(operation_id), (method, path, operation_id)
    assert {
        "create_client",
        "list_clients",
        "get_client",
        "patch_client",
        "replace_client",
        "delete_client",
        "create_mailing",
        "list_mailings",
        "get_mailing",
        "get_mailing_stats",
        "list_mailing_stats",
        "list_mailing_messages",
        "cancel_mailing",
        "clone_mailing",
        "send_test_message",
        "get_test_message",
        "list_test_messages",
        "list_audit_entries",
        "list_providers",
        "list_mailing_replies",
        "kannel_receipt",
    } <= set(ids)


@pytest.mark.parametrize(
    ("method", "path", "operation"), API_OPERATIONS, ids=[f"{m} {p}" for m, p, _ in API_OPERATIONS]
)
def test_every_api_operation_documents_its_errors(
    method: str, path: str, operation: dict[str, Any]
) -> None:
    responses = operation["responses"]
    role = operation["x-required-role"]
    if role == "none":  # a gateway's callback: proven by its signature, not a token
        expected = {"403", "422"}
    else:
        expected = {"401", "422"} | ({"403"} if role == "admin" else set())
    if "{" in path:
        expected.add("404")
    assert expected <= responses.keys(), (method, path, sorted(responses))
    for status in expected:
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (status, schema)
    assert operation.get("description"), (method, path)


def _schema(ref_or_schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in ref_or_schema:
        return SPEC["components"]["schemas"][ref_or_schema["$ref"].rsplit("/", 1)[1]]  # type: ignore[no-any-return]
    return ref_or_schema


@pytest.mark.parametrize(
    ("method", "path", "operation"), API_OPERATIONS, ids=[f"{m} {p}" for m, p, _ in API_OPERATIONS]
)
def test_every_json_request_body_has_an_example(
    method: str, path: str, operation: dict[str, Any]
) -> None:
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return
    schema = _schema(content["application/json"]["schema"])
    assert schema.get("examples"), (method, path, schema.get("title"))


def test_the_error_schema_has_examples() -> None:
    error = SPEC["components"]["schemas"]["ErrorResponse"]
    assert error["properties"]["detail"]["examples"]
