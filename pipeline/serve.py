"""Label one answer now: the registered model behind MLflow's own scoring server, on loopback by default.

The app is MLflow's (`mlflow.pyfunc.scoring_server.init`: `/invocations`, `/ping`, `/health`, `/version`,
its request formats and its 4xx answers for malformed input), run in-process by uvicorn. The one thing
added is a limit on the request body, checked before MLflow reads it, so an oversized request is refused
with 413 and never parsed, segmented or labelled. MLflow itself is reached only through the registry (pinning
the model URI) and the pyfunc module (loading it into the scoring app).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    from pipeline.registry import PinnedModel

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Constructed example (written for this project, not taken from any source).
EXAMPLE_DOCUMENT = {
    "id": "svar-1",
    "text": "Regeringen tillför 40 miljoner kronor till det förebyggande arbetet mot våldsbejakande extremism. "
    "En utredare ska se över reglerna för skydd av offentliga platser.",
}


class RequestSizeLimit:
    """ASGI middleware: refuse a request whose body is over `max_bytes` with 413, before the app parses it.

    A declared `Content-Length` over the limit is refused without reading the body; a body sent without one
    is read up to the limit and refused as soon as it passes it. MLflow's app reads the whole body before
    parsing anyway, so handing it the body read here costs one copy.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, f"request body is {declared} bytes")
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(send, f"request body passed {self.max_bytes} bytes")
                return
            if not message.get("more_body", False):
                break
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, what: str) -> None:
        body = json.dumps(
            {
                "error_code": "REQUEST_TOO_LARGE",
                "message": f"{what}; this server accepts at most {self.max_bytes} bytes "
                "(serve.max_request_bytes / --max-request-bytes). Split the input into smaller requests.",
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def build_app(served: PinnedModel, max_request_bytes: int) -> ASGIApp:
    """MLflow's scoring app for the pinned model (`pyfunc.scoring_app`), behind the request-size limit.

    A registered model's rows name it as batch labelling's do (registered name and version).
    """
    from pipeline.labelling import ModelInfo
    from pipeline.pyfunc import scoring_app

    info = None
    if served.name is not None and served.version is not None:
        info = ModelInfo(name=served.name, version=served.version, uri=served.requested)
    return RequestSizeLimit(scoring_app(served.pinned, info), max_request_bytes)


def example_request(url: str) -> str:
    """A curl command that labels the constructed example document."""
    payload = json.dumps({"dataframe_records": [EXAMPLE_DOCUMENT]}, ensure_ascii=False)
    return f"curl -s {url}/invocations -H 'Content-Type: application/json' -d '{payload}'"


def serve(app: ASGIApp, host: str, port: int) -> None:
    """Run the app until interrupted (uvicorn handles SIGINT/SIGTERM and finishes open requests)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")
