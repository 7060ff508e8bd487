"""Map a function over items: in-process, a local process pool (default), or Ray (``engine="ray"``).

Results come back in input order and are the same whichever engine runs them.

Example:
    >>> from aigclab.parallel import map_items
    >>> map_items(abs, [-1, -2, 3], workers=1)
    [1, 2, 3]
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Literal, TypeVar

from rich.progress import track

from aigclab.errors import AigclabError

__all__ = ["Engine", "map", "map_items", "ray_session"]

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


def _call(fn: Callable[[T], R], item: T) -> R:
    return fn(item)


@contextlib.contextmanager
def ray_session(workers: int | None = None, address: str | None = None) -> Iterator[Any]:
    """The `ray` module, connected to `address` or to a local cluster of `workers` CPUs started here.

    A cluster started here is shut down on exit; an already initialised Ray is used as it is.
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
            kwargs["num_cpus"] = workers or os.cpu_count() or 1
        ray.init(**kwargs)
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
