"""Checks that an OpenAPI document tells the truth: every operation documents a success
response and every path parameter, and a body actually returned matches its schema."""

import re

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def problems(document: dict) -> list[str]:
    """What the document leaves out: operations without a 2xx response with a body (204
    excepted) and path parameters it does not declare."""
    found = []
    for path, operations in document["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        shared = operations.get("parameters", [])
        for method, operation in operations.items():
            if method not in HTTP_METHODS:
                continue
            where = f"{method.upper()} {path}"
            parameters = shared + operation.get("parameters", [])
            declared = {p["name"] for p in parameters if p.get("in") == "path"}
            if names - declared:
                found.append(f"{where}: path parameters not declared: {sorted(names - declared)}")
            successes = {
                str(code): answer
                for code, answer in operation.get("responses", {}).items()
                if str(code).startswith("2")
            }
            if not successes:
                found.append(f"{where}: no success response")
            for code, answer in successes.items():
                if code != "204" and not answer.get("content"):
                    found.append(f"{where}: {code} without a body schema")
    return found


def _nullable(schema):
    """OpenAPI 3.0's `nullable: true` as JSON Schema (`type` may also be null)."""
    if isinstance(schema, dict):
        schema = {key: _nullable(value) for key, value in schema.items()}
        if schema.pop("nullable", False):
            if "type" in schema:
                schema["type"] = [schema["type"], "null"]
            elif "$ref" in schema or "allOf" in schema or "oneOf" in schema:
                schema = {"anyOf": [schema, {"type": "null"}]}
        return schema
    if isinstance(schema, list):
        return [_nullable(item) for item in schema]
    return schema


def check_body(document: dict, path: str, method: str, status: int, body) -> None:
    """Raise `jsonschema.ValidationError` unless `body` matches the documented JSON schema
    of that operation's `status` response."""
    document = _nullable(document)
    answer = document["paths"][path][method]["responses"][str(status)]
    schema = answer["content"]["application/json"]["schema"]
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry = Registry().with_resource("urn:openapi", resource)
    schema = {**schema, "$schema": "https://json-schema.org/draft/2020-12/schema"}
    schema = _rebase(schema)
    jsonschema.Draft202012Validator(schema, registry=registry).validate(body)


def _rebase(schema):
    """`#/components/...` references, pointed at the whole document."""
    if isinstance(schema, dict):
        return {
            key: (
                "urn:openapi" + value if key == "$ref" and value.startswith("#") else _rebase(value)
            )
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_rebase(item) for item in schema]
    return schema
