"""The ``/v1/files`` routes of ``--root``: list images with their sidecars, thumbnails,
caption some (optionally saving new sidecars), and save an edited sidecar.

Paths go through :class:`~captionkit.serve.files.RootFolder`'s guard: a path leading out of
the root answers 403, a path that is no image under it 404; captioning goes through the same
admission and batcher as ``/v1/caption``.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from captionkit.serve.app import APIError
from captionkit.serve.files import RootFolder
from captionkit.serve.routes import Settings, caption_items, service_of, too_many_images
from captionkit.serve.service import Item

files = APIRouter(prefix="/v1/files", tags=["files (--root)"])


class FilesCaptionIn(Settings):
    paths: list[str]
    save: bool = Field(False, description="write sidecars for images that have none")


class SidecarIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    text: str


def _root(request: Request) -> RootFolder:
    svc = service_of(request)
    folder = getattr(request.app.state, "root_folder", None)
    if folder is None:
        assert svc.config.root is not None and svc.run is not None
        folder = RootFolder(svc.config.root, extension=svc.run.sinks.extension)
        request.app.state.root_folder = folder
    return folder


@files.get("", summary="Images under --root with their sidecar captions")
async def list_files(request: Request) -> dict[str, Any]:
    folder = _root(request)
    return {"images": await anyio.to_thread.run_sync(folder.listing)}


@files.get("/image", summary="One image under --root (for thumbnails)")
async def get_image(request: Request, path: str) -> FileResponse:
    folder = _root(request)
    real = _guarded(folder.resolve_image, path)
    return FileResponse(real, headers={"Cache-Control": "no-cache"})


@files.put("/sidecar", summary="Save an edited caption as the image's sidecar (atomic)")
async def save_sidecar(request: Request, body: SidecarIn) -> dict[str, Any]:
    folder = _root(request)
    return await anyio.to_thread.run_sync(_guarded, folder.save, body.path, body.text)


def _guarded(fn: Any, *args: Any) -> Any:
    """Run a ``--root`` operation; a path out of the root is 403, a missing image 404."""
    from captionkit.serve.files import NotUnderRoot, OutsideRoot

    try:
        return fn(*args)
    except OutsideRoot as exc:
        raise APIError(403, "Forbidden", str(exc)) from None
    except NotUnderRoot as exc:
        raise APIError(404, "NotFound", str(exc)) from None


@files.post("/caption", summary="Caption images under --root (optionally save new sidecars)")
async def caption_files(request: Request, body: FilesCaptionIn) -> dict[str, Any]:
    from captionkit.inputs.sources import Source

    svc = service_of(request)
    folder = _root(request)
    if len(body.paths) > svc.config.limits.max_images:
        raise too_many_images(svc.config.limits.max_images)
    items = []
    for rel in body.paths:
        real = _guarded(folder.resolve_image, rel)
        items.append(Item(name=rel, source=Source(key=rel, path=real, rel=None)))
    settings = Settings(**body.model_dump(exclude={"paths", "save"}))
    results = await caption_items(request, svc, settings, items)
    if body.save:
        for item, result in zip(items, results, strict=True):
            assert item.source is not None and item.source.path is not None
            if result.get("text") and not folder.has_sidecar(item.source.path):
                saved = await anyio.to_thread.run_sync(
                    _guarded, folder.save, item.name, result["text"]
                )
                result["saved"] = saved["sidecar"]
    return {"results": results}
