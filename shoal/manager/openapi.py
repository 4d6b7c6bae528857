"""The OpenAPI document of the manager's API, built from the route table so it cannot drift."""
from __future__ import annotations

import re

from aiohttp import web

from shoal.model.specs import NetworkSpec, ServiceSpec, StackSpec

_BODIES = {
    ("post", "/v1/stacks/{name}"): {"type": "object", "properties": {
        "stack": {"$ref": "#/components/schemas/StackSpec"}, "prune": {"type": "boolean"}}, "required": ["stack"]},
    ("post", "/v1/services/{ref}/update"): {"type": "object", "properties": {
        "spec": {"$ref": "#/components/schemas/ServiceSpec"}, "version": {"type": "integer"}}, "required": ["spec"]},
    ("post", "/v1/services/{ref}/scale"): {"type": "object", "properties": {"replicas": {"type": "integer"}}},
    ("post", "/v1/networks"): {"$ref": "#/components/schemas/NetworkSpec"},
    ("post", "/v1/configs"): {"type": "object", "properties": {
        "name": {"type": "string"}, "data": {"type": "string", "format": "byte"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
    ("post", "/v1/secrets"): {"type": "object", "properties": {
        "name": {"type": "string"}, "data": {"type": "string", "format": "byte"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
    ("post", "/v1/unlock"): {"type": "object", "properties": {"key": {"type": "string"}}},
}


def _q(name: str, kind: str, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": {"type": kind}, "description": description}


_QUERIES = {
    ("get", "/v1/agent/assignments"): [
        _q("digest", "string", "digest of the node's own part in the last answer the agent has "
           "(then only changed tasks are sent, with every task id: `delta: true`)"),
        _q("ep", "string", "the agent's position in the endpoint log, `epoch:seq` (empty: the whole table)"),
        _q("wait", "number", "seconds to hold the request when nothing is new (at most 60)"),
        _q("rev", "integer", "-1 to answer at once"),
    ],
}


def document(routes: list[web.RouteDef]) -> dict:
    paths: dict = {}
    for r in routes:
        method = r.method.lower()
        op: dict = {
            "operationId": r.handler.__name__,
            "summary": (r.handler.__doc__ or r.handler.__name__.replace("_", " ")).strip().splitlines()[0],
            "responses": {"200": {"description": "OK"}, "400": {"description": "invalid request"},
                          "404": {"description": "not found"}, "409": {"description": "conflict"},
                          "423": {"description": "cluster is locked"}},
        }
        params = re.findall(r"{(\w+)}", r.path)
        if params:
            op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                                for p in params]
        query = _QUERIES.get((method, r.path))
        if query:
            op["parameters"] = op.get("parameters", []) + query
        body = _BODIES.get((method, r.path))
        if body:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        if r.path.startswith("/v1/agent/"):
            op["tags"] = ["agent"]
        paths.setdefault(r.path, {})[method] = op
    schemas = {}
    for model in (StackSpec, ServiceSpec, NetworkSpec):
        s = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for k, v in s.pop("$defs", {}).items():
            schemas[k] = v
        schemas[model.__name__] = s
    return {
        "openapi": "3.0.3",
        "info": {"title": "Shoal manager API", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas},
    }
