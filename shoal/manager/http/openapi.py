"""The OpenAPI document of the manager's API, built from the route table so it cannot drift."""
from __future__ import annotations

import re

from shoal.manager.http.route import Route

_TAGS = {"user": "user", "local": "user", "public": "public", "agent": "agent", "join": "join",
         "browser": "dashboard", "browser-write": "dashboard"}


def document(routes: list[Route]) -> dict:
    paths: dict = {}
    schemas: dict = {}
    for r in routes:
        method = r.method.lower()
        doc = (r.handler.__doc__ or r.handler.__name__.replace("_", " ")).strip().splitlines()[0]
        op: dict = {
            "operationId": r.handler.__name__,
            "summary": doc,
            "tags": [_TAGS[r.audience]],
            "responses": {"200": {"description": "OK"}, "400": {"description": "invalid request"},
                          "403": {"description": "not allowed for this caller"},
                          "404": {"description": "not found"}, "409": {"description": "conflict"},
                          "413": {"description": f"body over {r.limit} bytes"},
                          "423": {"description": "cluster is locked"}},
        }
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": p_type}}
                  for p, p_type in ((p, "string") for p in re.findall(r"{(\w+)}", r.path))]
        params += [{"name": n, "in": "query", "required": False, "schema": {"type": t}, "description": d}
                   for n, t, d in r.query]
        if params:
            op["parameters"] = params
        if r.body is not None:
            s = r.body.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(s.pop("$defs", {}))
            schemas[r.body.__name__] = s
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{r.body.__name__}"}}}}
        paths.setdefault(r.path, {})[method] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "Shoal manager API", "version": "1",
                 "description": "Users call it on the manager's unix socket; node agents and joining "
                                "nodes over mutual TLS (tags user, agent, join)."},
        "paths": paths,
        "components": {"schemas": schemas},
    }
