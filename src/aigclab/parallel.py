"""Map a function over items: in-process, a local process pool (default), or Ray (``engine="ray"``).

Results come back in input order and are the same whichever engine runs them. `map_items` takes a
sequence and returns a list; `imap` streams: it takes any iterable, keeps at most `inflight` calls
pending (so memory stays bounded however many items there are) and yields results as they are ready.

Example:
    >>> from aigclab.parallel import map_items
    >>> map_items(abs, [-1, -2, 3], workers=1)
    [1, 2, 3]
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Literal, TypeVar

from rich.progress import track

from aigclab.errors import AigclabError

__all__ = ["Engine", "imap", "map", "map_items", "ray_session"]

T = TypeVar("T")
R = TypeVar("R")
Engine = Literal["local", "ray"]


def map_items(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    engine: Engine = "local",
    workers: int | None = None,
    address: str | None = None,
    description: str = "working",
    progress: bool = False,
) -> list[R]:
    """Apply `fn` to every item. `fn` must be picklable (a module-level function) for pools and Ray."""
    if engine == "ray":
        return _ray_map(fn, items, workers, address)
    if engine != "local":
        raise AigclabError(f"unknown engine {engine!r}; choose 'local' or 'ray'")
    workers = min(workers or os.cpu_count() or 1, max(1, len(items)))
    if workers == 1:
        seq = track(items, description=description, transient=True) if progress else items
        return [fn(item) for item in seq]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        results: Iterable[R] = pool.map(fn, items)
        if progress:
            results = track(results, total=len(items), description=description, transient=True)
        return list(results)


map = map_items  # the documented public name: aigclab.parallel.map


def imap(
    fn: Callable[..., R],
    items: Iterable[T],
    *,
    args: tuple[Any, ...] = (),
    engine: Engine = "local",
    workers: int | None = None,
    address: str | None = None,
    inflight: int | None = None,
) -> Iterator[R]:
    """Yield ``fn(item, *args)`` for each item, in order, with at most `inflight` calls pending.

    `args` are sent once per call to a local pool and put once into the object store on Ray. With
    ``workers=1`` locally everything runs in this process. Stopping the iteration (or Ctrl-C) cancels
    the calls not yet started.
    """
    if engine not in ("local", "ray"):
        raise AigclabError(f"unknown engine {engine!r}; choose 'local' or 'ray'")
    if engine == "local" and address:
        raise AigclabError("--address needs --engine ray")
    workers = workers or os.cpu_count() or 1
    inflight = inflight or 2 * workers
    if engine == "ray":
        yield from _ray_imap(fn, items, args, workers, address, inflight)
    elif workers == 1:
        yield from (fn(item, *args) for item in items)
    else:
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_ignore_sigint)
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item, *args))
                if len(pending) >= inflight:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=not pending, cancel_futures=True)


def _ignore_sigint() -> None:
    """Pool workers leave Ctrl-C to the parent, which stops the job and cleans up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _call(fn: Callable[..., R], item: T, *args: Any) -> R:
    return fn(item, *args)


@contextlib.contextmanager
def ray_session(workers: int | None = None, address: str | None = None) -> Iterator[Any]:
    """The `ray` module, connected to `address` or to a new local cluster of `workers` CPUs.

    A cluster started here is shut down on exit; an already initialised Ray is used as it is. Without
    an address a new local cluster is started, never one that happens to run on this machine.
    """
    try:
        import ray
    except ImportError:
        raise AigclabError("engine 'ray' needs the extra: pip install 'aigclab[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
        }
        if address:
            kwargs["address"] = address
        else:
            kwargs |= {"address": "local", "num_cpus": workers or os.cpu_count() or 1}
        try:
            ray.init(**kwargs)
        except ConnectionError as err:
            raise AigclabError(f"cannot connect to the Ray cluster at {address}: {err}") from None
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def _ray_map(fn: Callable[[T], R], items: Sequence[T], workers: int | None, address: str | None) -> list[R]:
    with ray_session(workers, address) as ray:
        remote: Any = ray.remote(_call)
        fn_ref = ray.put(fn)
        return list(ray.get([remote.remote(fn_ref, item) for item in items]))


def _ray_imap(
    fn: Callable[..., R],
    items: Iterable[T],
    args: tuple[Any, ...],
    workers: int | None,
    address: str | None,
    inflight: int,
) -> Iterator[R]:
    with ray_session(workers, address) as ray:
        inflight = max(inflight, 2 * int(ray.cluster_resources().get("CPU", 1)))
        pending: deque[Any] = deque()
        try:
            remote: Any = ray.remote(_call)
            refs = [ray.put(fn), *(ray.put(a) for a in args)]
            for item in items:
                pending.append(remote.remote(refs[0], item, *refs[1:]))
                if len(pending) >= inflight:
                    yield ray.get(pending.popleft())
            while pending:
                yield ray.get(pending.popleft())
        finally:
            for ref in pending:
                ray.cancel(ref)
