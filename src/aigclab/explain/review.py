"""Terminal review of AnomAgent proposals: accept, edit or reject each quadruple with one key.

Keys: ``a`` accept, ``e`` edit (each field is asked with its current value as default), ``r`` reject,
``s`` skip (leave pending), ``b`` back to the previous proposal, ``q`` quit, ``?`` help. Decisions are
written to the `AnnotationStore` at once (source ``terminal``), so a session can stop any time and a web
review page may work on the same database. Only reviewed quadruples are exported as ground truth.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from aigclab.explain.annotation_store import AnnotationStore, Proposal
from aigclab.explain.quadruples import SEVERITY_SCALE, Quadruple

__all__ = ["KEYS", "review_terminal"]

KEYS = {"a": "accept", "e": "edit", "r": "reject", "s": "skip", "b": "back", "q": "quit", "?": "help"}


def _show(console: Console, p: Proposal, pos: int, total: int) -> None:
    q = p.quadruple
    console.rule(
        f"[{pos + 1}/{total}] {p.path} — proposal {p.idx + 1}" + (f" (was {p.review})" if p.review else "")
    )
    table = Table(show_header=False)
    table.add_row("name", q.name)
    table.add_row("phenomenon", q.phenomenon)
    table.add_row("reasoning", q.reasoning)
    table.add_row("severity", f"{q.severity} — {SEVERITY_SCALE[q.severity]}")
    if q.region:
        table.add_row("region", str(q.region))
    if q.confidence is not None:
        table.add_row("confidence", f"{q.confidence:.2f}")
    console.print(table)
    console.print(r"\[a]ccept  \[e]dit  \[r]eject  \[s]kip  \[b]ack  \[q]uit  \[?] help")


def _edit(q: Quadruple, ask: Callable[..., str]) -> Quadruple:
    data = q.model_dump()
    for field in ("name", "phenomenon", "reasoning"):
        data[field] = ask(field, default=data[field])
    while True:
        sev = ask("severity (1-5)", default=str(data["severity"]))
        if sev.strip() in {"1", "2", "3", "4", "5"}:
            data["severity"] = int(sev)
            return Quadruple.model_validate(data)


def review_terminal(
    store: AnnotationStore,
    getchar: Callable[[], str],
    ask: Callable[..., str],
    console: Console | None = None,
    reviewer: str = "",
    include_reviewed: bool = False,
) -> dict[str, int]:
    """Walk the pending (or all) proposals; returns counts of decisions made in this session."""
    console = console or Console()
    items = store.proposals(only_pending=not include_reviewed)
    counts = {"accepted": 0, "edited": 0, "rejected": 0, "skipped": 0}
    if not items:
        console.print("nothing to review")
        return counts
    pos = 0
    while 0 <= pos < len(items):
        p = items[pos]
        _show(console, p, pos, len(items))
        key = getchar().lower()
        if key in ("q", ""):  # "" = end of input
            break
        if key == "?":
            console.print(", ".join(f"{k} {v}" for k, v in KEYS.items()))
            continue
        if key == "b":
            pos = max(0, pos - 1)
            continue
        if key == "s":
            counts["skipped"] += 1
        elif key in ("a", "r"):
            status = "accepted" if key == "a" else "rejected"
            store.review(p.image_id, p.idx, status, reviewer=reviewer, source="terminal")
            counts[status] += 1
        elif key == "e":
            store.review(
                p.image_id, p.idx, "edited", _edit(p.quadruple, ask), reviewer=reviewer, source="terminal"
            )
            counts["edited"] += 1
        else:
            console.print(f"unknown key {key!r}; press ? for help")
            continue
        pos += 1
    left = len(store.proposals(only_pending=True))
    console.print(", ".join(f"{v} {k}" for k, v in counts.items()) + f"; {left} still pending")
    return counts
