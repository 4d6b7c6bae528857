"""JSON answers of the API."""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web


def reply(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))
