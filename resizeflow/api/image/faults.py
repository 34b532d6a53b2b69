"""Glance's error bodies, as its WSGI framework (WebOb) writes them.

The body follows the request's ``Accept``: JSON for a client that asks for it
(openstacksdk does), HTML for a browser or ``*/*``, plain text otherwise. The
JSON ``message`` carries WebOb's ``<br /><br />`` tail: clients that match on
Glance's messages see the same text here.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from starlette.responses import JSONResponse, PlainTextResponse, Response


class GlanceFault(Exception):
    """An error the image API answers with Glance's status code and explanation."""

    def __init__(self, code: int, explanation: str, headers: Mapping[str, str] | None = None):
        super().__init__(explanation)
        self.code = code
        self.explanation = explanation
        self.headers = dict(headers or {})


def fault_response(
    code: int, explanation: str, accept: str, headers: Mapping[str, str] | None = None
) -> Response:
    title = HTTPStatus(code).phrase
    status = f"{code} {title}"
    if "html" in accept or "*/*" in accept:
        body = (
            f"<html>\n <head>\n  <title>{status}</title>\n </head>\n <body>\n"
            f"  <h1>{status}</h1>\n  {explanation}<br /><br />\n\n\n\n </body>\n</html>"
        )
        return Response(body, code, headers, media_type="text/html")
    if "application/json" in accept:
        message = {"message": f"{explanation}<br /><br />\n\n\n", "code": status, "title": title}
        return JSONResponse(message, code, headers)
    return PlainTextResponse(f"{status}\n\n{explanation}\n\n   ", code, headers)
