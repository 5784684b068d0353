"""The OpenAPI 3.1 document and the docs page, both written from the endpoints (which
the command table made): nothing here is maintained by hand per route."""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

from dashpay import __version__
from dashpay.api.commands import Param
from dashpay.api.http.errors import STATUS_BY_KIND
from dashpay.api.http.routes import IDEMPOTENCY_HEADER, Endpoint

FORM_TYPE = "application/x-www-form-urlencoded"
_ERROR = {"$ref": "#/components/responses/Error"}


def _schema(param: Param) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": param.json_type, "description": param.help}
    if param.json_type == "array":
        schema["items"] = {"type": param.json_items}
    return schema


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    command = endpoint.command
    answer = {"type": "object"} if endpoint.answers == "application/json" else {"type": "string"}
    op: dict[str, Any] = {
        "summary": endpoint.summary,
        "responses": {
            "200": {
                "description": "The same result the control socket's method returns."
                if command is not None
                else "The answer.",
                "content": {endpoint.answers: {"schema": answer}},
            },
            "default": _ERROR,
        },
    }
    if endpoint.scope is None:
        op["security"] = []
    else:
        op["security"] = [{"bearer": [endpoint.scope]}]
        op["description"] = f"Needs an API key with the `{endpoint.scope}` scope."
        op["responses"].update({"401": _ERROR, "403": _ERROR, "429": _ERROR})
    if command is None:
        op["operationId"] = endpoint.path.strip("/").replace("/", "_").replace(".", "_") or "root"
        if endpoint.form:
            fields = {name: {"type": "string"} for name in endpoint.form}
            op["requestBody"] = {
                "required": False,
                "content": {FORM_TYPE: {"schema": {"type": "object", "properties": fields}}},
            }
        return op
    op["operationId"] = _operation_id(endpoint)
    op["tags"] = [command.name.partition(".")[0]]
    in_path = set(endpoint.path_params)
    parameters: list[dict[str, Any]] = []
    for name in endpoint.path_params:
        param = next(p for p in command.params if p.name == name)
        schema = _schema(param)
        if param.json_type == "array":
            schema = {"type": param.json_items, "description": param.help}
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    rest = [p for p in command.params if p.name not in in_path]
    if endpoint.method == "GET":
        for param in rest:
            parameters.append(
                {
                    "name": param.name,
                    "in": "query",
                    "required": param.required,
                    "schema": _schema(param),
                    **({"explode": False} if param.json_type == "array" else {}),
                }
            )
    elif rest:
        op["requestBody"] = {
            "required": any(p.required for p in rest),
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {p.name: _schema(p) for p in rest},
                        "required": [p.name for p in rest if p.required],
                    }
                }
            },
        }
    if any(p.name == "idempotency_key" for p in command.params):
        parameters.append(
            {
                "name": IDEMPOTENCY_HEADER.title(),
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "The same as idempotency_key in the body.",
            }
        )
    if parameters:
        op["parameters"] = parameters
    return op


def _operation_id(endpoint: Endpoint) -> str:
    assert endpoint.command is not None
    base = endpoint.command.name.replace(".", "_")
    if len(endpoint.command.http) > 1:
        index = [r.partition(" ")[2] for r in endpoint.command.http].index(endpoint.path)
        return base if index == 0 else f"{base}_{index + 1}"
    return base


def openapi_document(endpoints: Iterable[Endpoint]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dashpay HTTP API",
            "version": __version__,
            "description": (
                "Every /v1 route is a command of dashpay's command table (the same one the "
                "CLI and the control socket use): same parameters, same results, same "
                'error kinds. Errors are {"error": {"kind", "message"}}; statuses: '
                + ", ".join(f"{kind} {status}" for kind, status in STATUS_BY_KIND.items())
            ),
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["kind", "message"],
                            "properties": {
                                "kind": {"type": "string", "enum": sorted(STATUS_BY_KIND)},
                                "message": {"type": "string"},
                            },
                        }
                    },
                }
            },
            "responses": {
                "Error": {
                    "description": "An error with the kind the control socket uses.",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
            },
        },
    }


def docs_page(document: dict[str, Any]) -> str:
    """A self-contained HTML page listing every route (no scripts, no outside assets)."""
    rows = []
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            security = op.get("security") or []
            scope = ", ".join(s for req in security for s in req.get("bearer", [])) or "public"
            params = ", ".join(p["name"] for p in op.get("parameters", []))
            content = op.get("requestBody", {}).get("content", {})
            body = content.get("application/json") or content.get(FORM_TYPE) or {}
            fields = ", ".join(body.get("schema", {}).get("properties", {}))
            rows.append(
                "<tr>"
                f"<td><code>{html.escape(method.upper())}</code></td>"
                f"<td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(scope)}</td>"
                f"<td>{html.escape(op.get('summary', ''))}</td>"
                f"<td>{html.escape(params)}</td>"
                f"<td>{html.escape(fields)}</td>"
                "</tr>"
            )
    title = html.escape(f"{document['info']['title']} {document['info']['version']}")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:left;vertical-align:top}</style></head><body>"
        f"<h1>{title}</h1><p>{html.escape(document['info']['description'])}</p>"
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1). '
        "Send API keys as <code>Authorization: Bearer &lt;key&gt;</code>.</p>"
        "<table><tr><th>method</th><th>path</th><th>scope</th><th>what</th>"
        "<th>path, query and header parameters</th><th>body fields</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
