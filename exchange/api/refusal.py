"""How the API says no: an HTTP status per refusal code, and one JSON body shape.

Every refusal body is ``{"error": {"code": ..., "field": ..., "message": ...}}``: the code
from the shared table (settlement/refusals.py, docs/refusals.md), the request field it is
about (or null), and one line for a person. A refusal changes nothing.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from wattmesh.settlement.errors import WattmeshError
from wattmesh.settlement.refusals import codes_of

__all__ = ["API_CODES", "HTTP_STATUS", "ApiRefused", "refusal_response"]

API_CODES = codes_of("api")

# The status of each code; a code of the table that is not here (a gossip code of a write
# the node's admission refuses) is 422: the request was understood and is not acceptable.
HTTP_STATUS = {
    "malformed": 422,
    "unauthorized": 401,
    "forbidden": 403,
    "bad-origin": 403,
    "not-member": 403,
    "bad-host": 400,
    "not-found": 404,
    "unknown-order": 404,
    "duplicate": 409,
    "too-large": 413,
    "slow-request": 408,
    "rate-limited": 429,
    "too-many-streams": 503,
}

# The request field a gossip code of a write is about, when the code alone says it.
_FIELD_OF = {"late": "interval", "future": "interval", "wrong-market": "market",
             "unknown-order": "id"}  # fmt: skip


class ApiRefused(WattmeshError):
    """Raised inside a handler to refuse the request with ``code`` (from API_CODES)."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        if code not in API_CODES:
            raise ValueError(f"{code!r} is not an API refusal code (settlement/refusals.py)")
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message
        self.field = field if field is not None else _FIELD_OF.get(code)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "field": self.field, "message": self.message}}

    @property
    def status(self) -> int:
        return HTTP_STATUS.get(self.code, 422)


def refusal_response(
    refused: ApiRefused, headers: dict[str, str] | None = None
) -> Response:
    """The HTTP response of a refusal."""
    return Response(
        orjson.dumps(refused.body()),
        status_code=refused.status,
        media_type="application/json",
        headers=headers,
    )
