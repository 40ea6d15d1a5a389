"""The ``/v1`` routes: caption, backends, styles, health, metrics, and ``--root`` files.

Handlers parse, check limits and call the :class:`~captionkit.serve.service.Service`; they
hold no captioning logic. Every limit is checked before any image is admitted, so a refused
request costs no model time, and a request is admitted whole or refused whole (503).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from captionkit.errors import ConfigError, InputError
from captionkit.http import format_size
from captionkit.serve.app import APIError
from captionkit.serve.service import Item, Service
from captionkit.serve.urlguard import URLLimits, URLRefused, URLTooLarge, fetch_image

T = TypeVar("T")

api = APIRouter(prefix="/v1")


# -- request and response bodies ---------------------------------------------------------------
class ImageIn(BaseModel):
    """One image by URL or as base64 (exactly one of the two)."""

    model_config = ConfigDict(extra="forbid")
    url: str | None = None
    base64: str | None = None
    name: str | None = Field(default=None, description="shown as `source` in the answer")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    style: str | None = None
    prompt: str | None = None
    num_captions: int | None = None
    decoding: dict[str, Any] = Field(default_factory=dict, description="captionkit.types.Decoding")
    options: dict[str, Any] = Field(
        default_factory=dict, description="backend options the server allows (--allow-option)"
    )


class CaptionIn(Settings):
    images: list[ImageIn]


class CaptionOut(BaseModel):
    backend: str
    model: str
    results: list[dict[str, Any]] = Field(
        description="per image: the JSONL record (source, text, candidates, error, seconds, "
        "cached, style, sha256, extra...) plus timings"
    )


MULTIPART_DOC = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {
                        "images": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        },
                        "style": {"type": "string"},
                        "prompt": {"type": "string"},
                        "num_captions": {"type": "integer"},
                        "decoding": {"type": "string", "description": "JSON object"},
                        "options": {"type": "string", "description": "JSON object"},
                    },
                }
            },
            "application/json": {"schema": CaptionIn.model_json_schema()},
        },
        "required": True,
    }
}


def service_of(request: Request) -> Service:
    return request.app.state.service


def invalid(message: str) -> APIError:
    return APIError(422, "ValidationError", message)


def too_large(message: str) -> APIError:
    return APIError(413, "LimitExceeded", message)


# -- parsing ------------------------------------------------------------------------------------
async def _multipart(request: Request, svc: Service) -> tuple[Settings, list[Item]]:
    limits = svc.config.limits
    try:
        form = await request.form(max_files=limits.max_images, max_fields=16)
    except StarletteHTTPException as exc:
        if "Too many files" in str(exc.detail):
            raise too_many_images(limits.max_images) from None
        raise invalid(f"bad multipart body: {exc.detail}") from None
    try:
        items: list[Item] = []
        fields: dict[str, Any] = {}
        for key, value in form.multi_items():
            if isinstance(value, str):
                if key in ("decoding", "options"):
                    try:
                        fields[key] = json.loads(value or "{}")
                    except ValueError:
                        raise invalid(f"{key}: not a JSON object") from None
                elif key in Settings.model_fields:
                    fields[key] = value if value != "" else None
                else:
                    raise invalid(f"unknown form field '{key}'")
                continue
            if key not in ("images", "image", "file"):
                raise invalid(f"unknown file field '{key}' (send images as 'images')")
            if value.size is not None and value.size > limits.max_image_bytes:
                raise _image_too_large(value.filename or key, value.size, limits.max_image_bytes)
            data = await value.read(limits.max_image_bytes + 1)
            if len(data) > limits.max_image_bytes:
                raise _image_too_large(value.filename or key, None, limits.max_image_bytes)
            items.append(Item(name=value.filename or f"image{len(items) + 1}", data=data))
    finally:
        await form.close()
    try:
        settings = Settings(**fields)
    except ValidationError as exc:
        raise _validation(exc) from None
    return settings, items


async def _json(request: Request, svc: Service) -> tuple[Settings, list[Item]]:
    limits = svc.config.limits
    try:
        body = CaptionIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise _validation(exc) from None
    if len(body.images) > limits.max_images:
        raise too_many_images(limits.max_images)
    items: list[Item | None] = [None] * len(body.images)
    urls: list[tuple[int, str]] = []
    for i, image in enumerate(body.images):
        name = image.name or image.url or f"image{i + 1}"
        if (image.url is None) == (image.base64 is None):
            raise invalid(f"images.{i}: give exactly one of 'url' and 'base64'")
        if image.base64 is not None:
            text = image.base64
            if text.startswith("data:"):  # a data URL, as a browser's FileReader makes
                text = text.split(",", 1)[-1]
            if len(text) * 3 // 4 > limits.max_image_bytes + 3:
                raise _image_too_large(name, len(text) * 3 // 4, limits.max_image_bytes)
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise invalid(f"images.{i}: not valid base64") from None
            if len(data) > limits.max_image_bytes:
                raise _image_too_large(name, len(data), limits.max_image_bytes)
            items[i] = Item(name=name, data=data)
        else:
            assert image.url is not None
            urls.append((i, image.url))
    if urls:
        guard = URLLimits(
            max_bytes=limits.max_image_bytes,
            timeout=svc.config.url_timeout,
            allow_private=svc.config.allow_private_urls,
        )
        fetched = await asyncio.gather(
            *(fetch_image(url, guard) for _, url in urls), return_exceptions=True
        )
        for (i, url), got in zip(urls, fetched, strict=True):
            name = body.images[i].name or url
            if isinstance(got, URLRefused):
                raise invalid(str(got))
            if isinstance(got, URLTooLarge):
                raise too_large(str(got))
            if isinstance(got, InputError):  # the remote's fault: that image fails alone
                items[i] = Item(name=name, data=None)
                items[i].error = str(got)  # type: ignore[union-attr]
            elif isinstance(got, BaseException):
                raise got
            else:
                items[i] = Item(name=name, data=got)
    settings = Settings(**body.model_dump(exclude={"images"}))
    return settings, [i for i in items if i is not None]


def _validation(exc: ValidationError) -> APIError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return invalid(f"{where}: {first['msg']}" if where else first["msg"])


def too_many_images(limit: int) -> APIError:
    return too_large(f"too many images: at most {limit} per request (--max-images)")


def _image_too_large(name: str, size: int | None, limit: int) -> APIError:
    what = f"{format_size(size)} is over" if size is not None else "over"
    return too_large(f"{name}: {what} the {format_size(limit)} per-image limit (--max-image-mb)")


def check_pixels(items: list[Item], max_pixels: int) -> None:
    """Refuse decompression bombs from the header alone, before any pixel is decoded."""
    import warnings

    from PIL import Image

    for item in items:
        if not item.data:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(item.data)) as img:
                    width, height = img.size
        except Image.DecompressionBombError:
            width, height = max_pixels, 2  # over any limit Pillow itself refuses
        except Exception:  # not an image: that image fails alone, with the decoder's reason
            continue
        if width * height > max_pixels:
            raise invalid(
                f"{item.name}: {width}x{height} is over the {max_pixels:,}-pixel limit "
                "(--max-pixels)"
            )


# -- running ------------------------------------------------------------------------------------
async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it if the client goes away (its queued images are freed)."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.1)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            service_of(request).metrics.disconnect()
            raise asyncio.CancelledError("client disconnected")


async def caption_items(
    request: Request, svc: Service, settings: Settings, items: list[Item]
) -> list[dict[str, Any]]:
    """Admit, caption and answer ``items`` (items with ``error`` set fail alone)."""
    if not items:
        raise invalid("no images in the request")
    check_pixels(items, svc.config.limits.max_pixels)
    try:
        caption_request = svc.request(
            style=settings.style,
            prompt=settings.prompt,
            num_captions=settings.num_captions,
            decoding=settings.decoding,
        )
        batcher = await anyio.to_thread.run_sync(svc.batcher_for, settings.options)
    except ConfigError as exc:
        raise invalid(str(exc)) from None
    failed = {id(i): i for i in items if getattr(i, "error", None)}
    todo = [i for i in items if id(i) not in failed]
    svc.admit(len(todo))
    try:
        answers = await until_disconnect(request, svc.caption(todo, caption_request, batcher))
    finally:
        svc.release(len(todo))
    by_id = dict(zip((id(i) for i in todo), answers, strict=True))
    out = []
    for item in items:
        if id(item) in failed:
            out.append(_failed_answer(svc, item, caption_request.style))
        else:
            out.append(by_id[id(item)])
    return out


def _failed_answer(svc: Service, item: Item, style: str) -> dict[str, Any]:
    assert svc.captioner is not None
    svc.metrics.image("failed")
    return {
        "source": item.name,
        "text": None,
        "candidates": [],
        "backend": svc.captioner.name,
        "model": svc.captioner.model_label,
        "style": style,
        "error": getattr(item, "error", "failed"),
        "timings": {"window_ms": 0.0, "model_ms": 0.0, "total_ms": 0.0},
    }


@api.post(
    "/caption",
    response_model=CaptionOut,
    openapi_extra=MULTIPART_DOC,
    summary="Caption uploaded images (multipart) or images by URL/base64 (JSON)",
)
async def caption(request: Request) -> dict[str, Any]:
    svc = service_of(request)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        settings, items = await _multipart(request, svc)
    elif ctype.startswith("application/json"):
        settings, items = await _json(request, svc)
    else:
        raise APIError(415, "UnsupportedMediaType", "send multipart/form-data or application/json")
    results = await caption_items(request, svc, settings, items)
    assert svc.captioner is not None
    return {"backend": svc.captioner.name, "model": svc.captioner.model_label, "results": results}


# -- information --------------------------------------------------------------------------------
@api.get("/health", summary="Liveness, the loaded model, whether a token is needed")
async def health(request: Request) -> dict[str, Any]:
    svc = service_of(request)
    cap = svc.captioner
    return {
        "status": "ok" if svc.main is not None else "starting",
        "backend": cap.name if cap else None,
        "model": cap.model_label if cap else None,
        "pending": svc.pending,
        "auth": bool(svc.config.token),
    }


@api.get("/backends", summary="Backends known here, the loaded one, options a request may set")
async def backends(request: Request) -> dict[str, Any]:
    from captionkit.captioners import registry

    svc = service_of(request)
    cap = svc.captioner
    assert cap is not None and svc.run is not None
    schema = cap.Options.model_json_schema().get("properties", {})
    return {
        "loaded": {
            "name": cap.name,
            "model": cap.model_label,
            "accepts_prompt": cap.accepts_prompt,
            "multiple_candidates": cap.multiple_candidates,
            "options": {k: v for k, v in svc.run.options.items() if _jsonable(v)},
            "allowed_options": {k: schema.get(k, {}) for k in svc.config.allow_options},
        },
        "available": [
            {"name": b.name, "description": b.description, "installed": b.available}
            for b in await anyio.to_thread.run_sync(registry.describe_backends)
        ],
    }


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


@api.get("/styles", summary="Caption styles and the server's defaults")
async def styles(request: Request) -> dict[str, Any]:
    from captionkit.styles import STYLES

    svc = service_of(request)
    assert svc.run is not None
    base = svc.run.request
    return {
        "default": base.style,
        "styles": [{"name": n, "description": s.summary} for n, s in STYLES.items()],
        "decoding": _decoding_defaults(base),
        "limits": {
            "max_images": svc.config.limits.max_images,
            "max_image_bytes": svc.config.limits.max_image_bytes,
            "max_request_bytes": svc.config.limits.max_request_bytes,
            "max_pixels": svc.config.limits.max_pixels,
        },
        "root": svc.config.root is not None,
    }


def _decoding_defaults(request: Any) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(request.decoding)
    data["stop"] = list(data["stop"])
    return data


@api.get("/metrics", summary="Requests, images, batch sizes, latency (JSON or Prometheus)")
async def metrics(request: Request, format: str = Query("json", pattern="^(json|prometheus)$")):
    svc = service_of(request)
    if format == "prometheus":
        return PlainTextResponse(svc.metrics.prometheus(pending_images=svc.pending))
    return JSONResponse(svc.metrics.snapshot(pending_images=svc.pending))


# -- downloads --------------------------------------------------------------------------------
class SidecarText(BaseModel):
    source: str
    text: str


class ZipIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[SidecarText]


def sidecar_names(sources: list[str], extension: str = ".txt") -> list[str]:
    """Zip member names for ``sources``, by the CLI's rule: ``photo.jpg`` -> ``photo.txt``;
    names whose stems clash in one folder keep their suffix (``photo.jpg.txt``); folders are
    kept, made safe (no absolute paths, no ``..``)."""
    from collections import Counter
    from pathlib import PurePosixPath

    clean = []
    for source in sources:
        parts = [
            p for p in PurePosixPath(source.replace("\\", "/")).parts if p not in ("/", "..", ".")
        ]
        clean.append(PurePosixPath(*parts) if parts else PurePosixPath("image"))
    stems = Counter((p.parent, p.stem) for p in clean)
    names, seen = [], Counter[str]()
    for path in clean:
        base = path.stem if stems[(path.parent, path.stem)] == 1 else path.name
        name = (
            str(path.parent / f"{base}{extension}") if str(path.parent) != "." else base + extension
        )
        seen[name] += 1
        if seen[name] > 1:  # the same name twice (two uploads of photo.jpg)
            name = name.removesuffix(extension) + f"-{seen[name]}{extension}"
        names.append(name)
    return names


@api.post("/sidecars.zip", summary="A zip of sidecar .txt files for the captions sent")
async def sidecars_zip(request: Request, body: ZipIn):
    import zipfile

    from fastapi.responses import Response

    svc = service_of(request)
    extension = svc.run.sinks.extension if svc.run is not None else ".txt"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        names = sidecar_names([i.source for i in body.items], extension)
        for name, item in zip(names, body.items, strict=True):
            zf.writestr(name, item.text.strip() + "\n")
    return Response(
        buffer.getvalue(),
        media_type="application/zip",
        headers={"Content-Disposition": 'attachment; filename="captions.zip"'},
    )
