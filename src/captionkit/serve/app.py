"""The ASGI app: FastAPI routes on one :class:`~captionkit.serve.service.Service`.

Cross-cutting rules live here, once: the bearer token (constant-time compare) on every
``/v1`` path but ``/v1/health``; the request-size cap, enforced on ``Content-Length`` and
again on the bytes actually received (a chunked body cannot slip past it); and the error
boundary, where every error is one line of JSON — ``captionkit.errors`` worded by
:func:`captionkit.session.error_report`, limit breaches 413/422, a full queue 503 with
``Retry-After`` — and the server keeps serving.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from captionkit import __version__
from captionkit.errors import CaptionkitError
from captionkit.serve.config import ServeConfig
from captionkit.serve.metrics import Metrics
from captionkit.serve.service import QueueFull, Service

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("captionkit.serve")


class APIError(Exception):
    """An error answered as ``{"error": {"type", "message"}}`` with ``status``."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = " ".join(message.split())


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": " ".join(str(message).split())}}


async def _send_json(send: Send, status: int, body: dict[str, Any], headers=()) -> None:
    response = JSONResponse(body, status_code=status, headers=dict(headers))
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:  # pragma: no cover - a response never reads
    return {"type": "http.disconnect"}


class _TooLarge(Exception):
    pass


class GuardMiddleware:
    """Token check and request-size cap, before any route (and any body parsing) runs."""

    #: Paths whose requests and latency ``/v1/metrics`` counts.
    COUNTED = ("/v1/caption", "/v1/files/caption")

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        max_bytes: int,
        metrics: Metrics,
        full: Callable[[], int | None] = lambda: None,
    ) -> None:
        """``full``: the Retry-After seconds when the queue is full (None: room left); a
        caption request is then refused before its body is read, so a flood of uploads
        cannot fill memory while the model is busy."""
        self.app = app
        self.metrics = metrics
        self.full = full
        self.token = token.encode() if token else None
        self.max_bytes = max_bytes

    def _authorised(self, scope: Scope) -> bool:
        if self.token is None:
            return True
        header = ""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value.decode("latin-1")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            given = ""
        return hmac.compare_digest(given.strip().encode(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, counted)
        finally:
            if scope["path"] in self.COUNTED:
                self.metrics.request(status, time.perf_counter() - start)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] != "/v1/health" and not self._authorised(scope):
            await _send_json(
                send,
                401,
                error_body("Unauthorized", "missing or wrong bearer token"),
                [("WWW-Authenticate", "Bearer")],
            )
            return
        if scope["path"] in self.COUNTED and scope.get("method") == "POST":
            retry = self.full()
            if retry is not None:
                self.metrics.reject()
                await _send_json(
                    send,
                    503,
                    error_body("QueueFull", QueueFull(retry).args[0]),
                    [("Retry-After", str(retry))],
                )
                return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, self._too_large())
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, self._too_large())

    def _too_large(self) -> dict[str, Any]:
        from captionkit.http import format_size

        return error_body(
            "RequestTooLarge",
            f"the request is over the {format_size(self.max_bytes)} limit (--max-request-mb)",
        )


def create_app(config: ServeConfig | None = None, *, service: Service | None = None) -> FastAPI:
    """The app. ``service``: one already started (the CLI loads the model before binding);
    else one is built from ``config`` and started by the app's lifespan (tests)."""
    from captionkit.serve import root_routes, routes

    if service is None:
        service = Service(config or ServeConfig())
    config = service.config
    started_here = service.main is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        if started_here:
            await anyio.to_thread.run_sync(service.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(service.close)

    app = FastAPI(
        title="captionkit",
        version=__version__,
        description="Caption images through one loaded model; review and edit captions.",
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.service = service
    app.include_router(routes.api)
    if config.root is not None:
        app.include_router(root_routes.files)
    _errors(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.add_middleware(
        GuardMiddleware,
        token=config.token,
        max_bytes=config.limits.max_request_bytes,
        metrics=service.metrics,
        full=lambda: service.retry_after() if service.pending >= config.limits.max_queue else None,
    )
    return app


def _errors(app: FastAPI) -> None:
    """Every error is one line of JSON; the process keeps serving."""
    from captionkit.session import error_report

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(error_body(exc.kind, exc.message), status_code=exc.status)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse(
            error_body("QueueFull", str(exc)),
            status_code=503,
            headers={"Retry-After": str(exc.retry_after)},
        )

    @app.exception_handler(CaptionkitError)
    async def captionkit_error(request: Request, exc: CaptionkitError) -> JSONResponse:
        report = error_report(exc)
        assert report is not None
        return JSONResponse(report.json(), status_code=report.http_status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        text = f"{where}: {first['msg']}" if where else str(first["msg"])
        return JSONResponse(error_body("ValidationError", text), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "error"
        return JSONResponse(
            error_body("HTTPError", detail), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s", request.url.path)
        return JSONResponse(
            error_body("InternalError", f"{type(exc).__name__}: {exc}"), status_code=500
        )
