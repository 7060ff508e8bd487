"""The SQLite store of AnomAgent runs and of their human review; one file, several writers.

Tables (one database file per annotation project):

- ``images``: one row per image (``image_id`` is the content hash, so the same picture is one row
  whatever its path).
- ``steps``: one row per image and agent step, keyed by (image_id, step). ``input_key`` hashes
  everything the step's output depends on (its prompt file, the model, the image and the outputs of the
  steps it reads), so a step is redone exactly when one of those changed. Also the prompt hash, the
  model, prompt/completion tokens, cost (USD), status (``ok`` / ``error``) and the error text.
- ``proposals``: the pipeline's final quadruples per image (index ``idx``), with the ``proposal_key``
  (the critic step's input key) that produced them; replaced when the critic reruns.
- ``reviews``: one row per reviewed proposal: ``accepted`` / ``edited`` / ``rejected``, the quadruple as
  finally accepted (edited or not), who reviewed and from where (``terminal``, ``web``), and the
  ``proposal_key`` it was made against (a review of an outdated proposal no longer counts).

Every write is its own transaction and the database runs in WAL mode, so the terminal review and a web
review page can write to the same file while an annotation run is going on. Only reviewed quadruples are
exported as ground truth (`export_reviewed`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aigclab.errors import DataError
from aigclab.explain.quadruples import ImageAnomalies, Quadruple

__all__ = ["REVIEW_STATUSES", "AnnotationStore", "Proposal"]

REVIEW_STATUSES = ("accepted", "edited", "rejected")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
  image_id TEXT PRIMARY KEY, path TEXT NOT NULL, width INTEGER, height INTEGER, added_at REAL);
CREATE TABLE IF NOT EXISTS steps (
  image_id TEXT NOT NULL, step TEXT NOT NULL, input_key TEXT NOT NULL, prompt_hash TEXT NOT NULL,
  model TEXT NOT NULL, output TEXT, prompt_tokens INTEGER DEFAULT 0, completion_tokens INTEGER DEFAULT 0,
  cost REAL DEFAULT 0, status TEXT NOT NULL, error TEXT, seconds REAL, created_at REAL,
  PRIMARY KEY (image_id, step));
CREATE TABLE IF NOT EXISTS proposals (
  image_id TEXT NOT NULL, idx INTEGER NOT NULL, proposal_key TEXT NOT NULL, quadruple TEXT NOT NULL,
  PRIMARY KEY (image_id, idx));
CREATE TABLE IF NOT EXISTS reviews (
  image_id TEXT NOT NULL, idx INTEGER NOT NULL, proposal_key TEXT NOT NULL, status TEXT NOT NULL,
  quadruple TEXT, reviewer TEXT, source TEXT, reviewed_at REAL, PRIMARY KEY (image_id, idx));
"""


@dataclass(frozen=True)
class Proposal:
    image_id: str
    path: str
    idx: int
    proposal_key: str
    quadruple: Quadruple
    review: str | None  # None while unreviewed (or reviewed against an older proposal)


class AnnotationStore:
    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise DataError(f"{self.path}: no annotation database here")
        if self.path.exists() and not self.path.is_file():
            raise DataError(f"{self.path}: not a regular file")
        self.db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise DataError(f"{self.path}: not an annotation database ({err})") from None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()

    # --- runs -------------------------------------------------------------------------------------
    def add_image(self, image_id: str, path: str, width: int, height: int) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO images VALUES (?, ?, ?, ?, ?) ON CONFLICT(image_id) DO UPDATE SET path=excluded.path",
                (image_id, path, width, height, time.time()),
            )

    def step(self, image_id: str, step: str) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM steps WHERE image_id=? AND step=?", (image_id, step))
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row, strict=True)) if row else None

    def put_step(self, image_id: str, step: str, **fields: Any) -> None:
        cols = ["image_id", "step", *fields]
        with self._tx() as db:
            db.execute(
                f"INSERT OR REPLACE INTO steps ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                (image_id, step, *fields.values()),
            )

    def put_proposals(self, image_id: str, proposal_key: str, quads: list[Quadruple]) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM proposals WHERE image_id=?", (image_id,))
            db.executemany(
                "INSERT INTO proposals VALUES (?, ?, ?, ?)",
                [
                    (image_id, i, proposal_key, q.model_dump_json(exclude_none=True))
                    for i, q in enumerate(quads)
                ],
            )

    def usage(self) -> dict[str, Any]:
        """Rows, tokens and cost per step."""
        rows = self.db.execute(
            "SELECT step, COUNT(*), SUM(status='ok'), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost) "
            "FROM steps GROUP BY step"
        ).fetchall()
        keys = ("rows", "ok", "prompt_tokens", "completion_tokens", "cost")
        return {r[0]: dict(zip(keys, r[1:], strict=True)) for r in rows}

    # --- review -----------------------------------------------------------------------------------
    def proposals(self, only_pending: bool = False) -> list[Proposal]:
        rows = self.db.execute(
            "SELECT p.image_id, i.path, p.idx, p.proposal_key, p.quadruple, r.status, r.proposal_key "
            "FROM proposals p JOIN images i USING (image_id) "
            "LEFT JOIN reviews r ON r.image_id=p.image_id AND r.idx=p.idx ORDER BY i.added_at, p.image_id, p.idx"
        ).fetchall()
        out = []
        for image_id, path, idx, key, quad, status, review_key in rows:
            review = status if review_key == key else None
            if only_pending and review is not None:
                continue
            out.append(Proposal(image_id, path, idx, key, Quadruple.model_validate_json(quad), review))
        return out

    def review(
        self,
        image_id: str,
        idx: int,
        status: str,
        quadruple: Quadruple | None = None,
        reviewer: str = "",
        source: str = "terminal",
    ) -> None:
        """Record a decision on proposal `idx` of `image_id` (`quadruple` is the edited one for 'edited')."""
        if status not in REVIEW_STATUSES:
            raise DataError(f"review status must be one of {', '.join(REVIEW_STATUSES)}, got {status!r}")
        row = self.db.execute(
            "SELECT proposal_key, quadruple FROM proposals WHERE image_id=? AND idx=?", (image_id, idx)
        ).fetchone()
        if row is None:
            raise DataError(f"{self.path}: no proposal {idx} for image {image_id}")
        if status == "edited" and quadruple is None:
            raise DataError("an 'edited' review needs the edited quadruple")
        final = (
            (quadruple.model_dump_json(exclude_none=True) if quadruple else row[1])
            if status != "rejected"
            else None
        )
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO reviews VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (image_id, idx, row[0], status, final, reviewer, source, time.time()),
            )

    def export_reviewed(self) -> tuple[list[ImageAnomalies], dict[str, int]]:
        """Ground truth: images whose every current proposal is reviewed, with accepted/edited quadruples.

        Images with an unreviewed proposal are left out (counted in the returned stats).
        """
        by_image: dict[str, list[Proposal]] = {}
        for p in self.proposals():
            by_image.setdefault(p.image_id, []).append(p)
        records, partial = [], 0
        for image_id, props in by_image.items():
            if any(p.review is None for p in props):
                partial += 1
                continue
            quads = []
            for p in props:
                row = self.db.execute(
                    "SELECT quadruple FROM reviews WHERE image_id=? AND idx=?", (image_id, p.idx)
                ).fetchone()
                if p.review != "rejected":
                    quads.append(Quadruple.model_validate_json(row[0]))
            meta = {"image_id": image_id, "reviewed": len(props), "kept": len(quads)}
            records.append(ImageAnomalies(image=props[0].path, anomalies=quads, meta=meta))
        return records, {"exported": len(records), "partially_reviewed": partial}

    def dump_step(self, image_id: str, step: str) -> Any:
        row = self.step(image_id, step)
        return json.loads(row["output"]) if row and row["output"] else None
