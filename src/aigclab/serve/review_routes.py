"""The AnomAgent review queue over HTTP: the same store and the same decisions as `aigclab explain review`.

Each request opens the `AnnotationStore` (SQLite in WAL mode, one transaction per write) and calls the
same methods the terminal review calls: `proposals` to list, `review` to accept, edit or reject (with
``source="web"``), `export_reviewed` for the ground truth. So the web page, the terminal review and a
running annotation job can share one database file.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel

from aigclab.errors import DataError
from aigclab.explain.annotation_store import AnnotationStore, Proposal
from aigclab.explain.quadruples import SEVERITY_SCALE, Quadruple
from aigclab.serve.service import Service
from aigclab.serve.uploads import ApiError

__all__ = ["Decision", "review_router"]


class Decision(BaseModel):
    """A reviewer's decision on proposal `idx` of image `image_id` (`quadruple`: the edit, for 'edited')."""

    image_id: str
    idx: int
    status: Literal["accepted", "edited", "rejected"]
    quadruple: Quadruple | None = None
    reviewer: str = ""


def _proposal(p: Proposal) -> dict[str, Any]:
    return {
        "image_id": p.image_id,
        "path": p.path,
        "idx": p.idx,
        "quadruple": p.quadruple.model_dump(exclude_none=True),
        "review": p.review,
    }


def review_router(service: Service, require_key: Callable[..., None]) -> APIRouter:
    from aigclab.serve.app import error_responses

    router = APIRouter(prefix="/v1/review", tags=["review"])
    path = service.config.review_path()

    @contextmanager
    def store() -> Iterator[AnnotationStore]:
        try:
            db = AnnotationStore(path)
        except (DataError, sqlite3.Error) as err:
            raise ApiError(500, "review_store", f"{path}: cannot open the review store ({err})") from None
        try:
            yield db
        finally:
            db.close()

    @router.get("/proposals")
    def proposals(pending: bool = False) -> dict[str, Any]:
        """Every current proposal (or only those still pending) with its review status."""
        with store() as db:
            items = db.proposals(only_pending=pending)
            left = len(db.proposals(only_pending=True))
        return {
            "store": path.name,
            "pending": left,
            "proposals": [_proposal(p) for p in items],
            "severity_scale": SEVERITY_SCALE,
        }

    @router.post(
        "/decision",
        dependencies=[Depends(require_key)],
        responses=error_responses(400, 401, 404, 422),
    )
    def decision(body: Decision) -> dict[str, Any]:
        """Accept, edit or reject one proposal; written at once to the store (source 'web')."""
        if body.status == "edited" and body.quadruple is None:
            raise ApiError(422, "missing_quadruple", "an 'edited' decision needs the edited quadruple")
        with store() as db:
            if not any(p.image_id == body.image_id and p.idx == body.idx for p in db.proposals()):
                raise ApiError(404, "no_proposal", f"no proposal {body.idx} for image {body.image_id}")
            db.review(body.image_id, body.idx, body.status, body.quadruple, body.reviewer, source="web")
            left = len(db.proposals(only_pending=True))
        return {"image_id": body.image_id, "idx": body.idx, "review": body.status, "pending": left}

    @router.get("/export")
    def export() -> dict[str, Any]:
        """Ground truth so far: fully reviewed images with their accepted or edited quadruples."""
        with store() as db:
            records, stats = db.export_reviewed()
        return {"records": [r.model_dump(exclude_none=True) for r in records], **stats}

    @router.get("/image/{image_id}", responses={200: {"content": {"image/png": {}}}, **error_responses(404)})
    async def image(image_id: str) -> Response:
        """The annotated image (PNG, at most 512 pixels a side) for the review page."""
        with store() as db:
            found = next((p.path for p in db.proposals() if p.image_id == image_id), None)
        if found is None:
            raise ApiError(404, "no_image", f"no image {image_id!r} with proposals in the review store")
        return Response(await service.gate.run(_thumbnail, found), media_type="image/png")

    return router


def _thumbnail(path: str, max_side: int = 512) -> bytes:
    from PIL import Image

    from aigclab.errors import ImageError
    from aigclab.io import load_image

    try:
        pil = Image.fromarray(load_image(path))
    except ImageError as err:
        raise ApiError(404, "image_unreadable", f"the stored image is unreadable now: {err.cause}") from None
    pil.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()
