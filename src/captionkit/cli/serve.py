"""``captionkit serve``: the HTTP API and the web page on one loaded model.

Parsing and printing only: the settings become a :class:`captionkit.serve.config.ServeConfig`,
which refuses an exposed bind without a token before anything loads; the model is loaded once,
then uvicorn serves the app until Ctrl-C or SIGTERM (in-flight requests finish first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from captionkit.cli.backend_flags import parse_options

SERVER, MODEL, LIMITS = "Server", "Model", "Limits"
MB = 1024 * 1024


def _opt(*decls: str, panel: str, **kw: Any) -> Any:
    return typer.Option(*decls, rich_help_panel=panel, **kw)


# fmt: off
def command(
    host: Annotated[str, _opt("--host", panel=SERVER, help="Address to bind. Anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, _opt("--port", panel=SERVER, min=0, max=65535, help="Port to bind.")] = 8000,
    token: Annotated[str | None, _opt("--token", panel=SERVER, envvar="CAPTIONKIT_TOKEN", show_envvar=True, help="Bearer token every /v1 request must carry (Authorization: Bearer T).")] = None,
    root: Annotated[Path | None, _opt("--root", panel=SERVER, help="Browse, caption and edit the sidecars of the images under this folder.")] = None,
    allow_private_urls: Annotated[bool, _opt("--allow-private-urls", panel=SERVER, help="Let image URLs reach loopback/private/link-local addresses (trusted networks only).")] = False,
    model: Annotated[str | None, _opt("--model", "-m", panel=MODEL, help="BACKEND:MODEL, as for `captionkit caption`. Default: grounded.")] = None,
    option: Annotated[list[str] | None, _opt("--option", "-o", panel=MODEL, help="Backend option KEY=VALUE the model is loaded with (repeatable).")] = None,
    allow_option: Annotated[list[str] | None, _opt("--allow-option", panel=MODEL, help="Backend option NAME a request may set (repeatable); each new value set loads another model copy.")] = None,
    device: Annotated[str | None, _opt(panel=MODEL, help="auto, cpu, cuda, cuda:1, mps.")] = None,
    style: Annotated[str | None, _opt("--style", "-s", panel=MODEL, help="Default style of requests that name none.")] = None,
    store: Annotated[str | None, _opt(panel=MODEL, help="Results store (SQLite) path, or 'none'. Default: the CLI's store.")] = None,
    config: Annotated[str | None, _opt(panel=MODEL, help="TOML config file (default: $CAPTIONKIT_CONFIG or the user config dir).")] = None,
    max_images: Annotated[int, _opt(panel=LIMITS, min=1, help="Images per request.")] = 32,
    max_image_mb: Annotated[float, _opt(panel=LIMITS, min=0.001, help="MB per image (uploads and URLs).")] = 20.0,
    max_request_mb: Annotated[float, _opt(panel=LIMITS, min=0.001, help="MB per request body.")] = 100.0,
    max_pixels: Annotated[int, _opt(panel=LIMITS, min=1, help="Pixels per image (decompression bombs).")] = 50_000_000,
    max_queue: Annotated[int, _opt(panel=LIMITS, min=1, help="Images waiting across all requests; beyond: 503 + Retry-After.")] = 256,
    max_batch: Annotated[int | None, _opt(panel=LIMITS, min=1, help="Images per model call (default: the backend's).")] = None,
    max_wait_ms: Annotated[float, _opt(panel=LIMITS, min=0.0, help="How long an image waits for company before its batch runs.")] = 10.0,
    url_timeout: Annotated[float, _opt(panel=LIMITS, min=0.1, help="Seconds for fetching one image URL, redirects included.")] = 10.0,
) -> None:
    """Serve the HTTP API (/v1, OpenAPI at /docs) and the web page (/) on one loaded model."""
    from captionkit.errors import require

    require("fastapi", "serve", "captionkit serve")
    require("uvicorn", "serve", "captionkit serve")
    from captionkit.serve.config import ServeConfig, UploadLimits

    cfg = ServeConfig(
        host=host,
        port=port,
        run={k: v for k, v in {"model": model, "device": device, "style": style, "store": store, "config": config}.items() if v is not None},
        options=parse_options(option or []),
        allow_options=tuple(a.replace("-", "_") for a in allow_option or ()),
        token=token or None,
        root=root,
        limits=UploadLimits(
            max_images=max_images,
            max_image_bytes=int(max_image_mb * MB),
            max_request_bytes=int(max_request_mb * MB),
            max_pixels=max_pixels,
            max_queue=max_queue,
        ),
        url_timeout=url_timeout,
        allow_private_urls=allow_private_urls,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
    )
    serve(cfg)
# fmt: on


def _server_class() -> Any:
    import signal
    from contextlib import contextmanager

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but SIGTERM (how service managers stop a server) ends in exit 0
        after the graceful shutdown, instead of being re-raised to kill the process."""

        @contextmanager
        def capture_signals(self) -> Any:
            with super().capture_signals():
                try:
                    yield
                finally:
                    self._captured_signals = [
                        s for s in self._captured_signals if s != signal.SIGTERM
                    ]

    return Server


def serve(cfg: Any) -> None:
    """Check, load the model once, print the address, serve until SIGTERM/Ctrl-C."""
    import uvicorn

    from captionkit.serve.app import create_app

    _Server = _server_class()
    from captionkit.serve.service import Service

    cfg.check()  # before the model loads: refusing to start costs nothing
    service = Service(cfg)
    service.start()
    assert service.captioner is not None
    shown = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    typer.echo(
        f"captionkit serve: {service.captioner.name} ({service.captioner.model_label}) "
        f"on http://{shown}:{cfg.port}/ (API: /v1, docs: /docs)"
        + (", token required" if cfg.token else ""),
        err=True,
    )
    server = _Server(
        uvicorn.Config(
            create_app(service=service),
            host=cfg.host,
            port=cfg.port,
            log_level="warning",
            timeout_graceful_shutdown=30,
            lifespan="on",
        )
    )
    server.run()
    service.close()  # normally done by the app's shutdown already (closing twice is a no-op)
    if not server.started:  # the port was taken: uvicorn said why
        raise typer.Exit(1)
