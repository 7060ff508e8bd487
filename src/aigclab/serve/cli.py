"""`aigclab serve`: the HTTP API and web pages on one machine (extra ``[serve]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from aigclab.errors import AigclabError

app = typer.Typer(no_args_is_help=False, invoke_without_command=True)
console = Console(stderr=True)


@app.callback()
def run(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(8000, help="TCP port (0: any free port, printed at start-up)"),
    detector: str = typer.Option("default", help="'default' or a saved detector .safetensors"),
    data_dir: Path = typer.Option(Path("aigclab-serve"), help="the only folder the server writes to"),
    review_db: Path | None = typer.Option(
        None, help="AnomAgent store to review (default DATA_DIR/anomagent.db)"
    ),
    anomaly_model: str = typer.Option(
        "", help="add quadruples to /v1/explain: reasoner, zero-shot-rule or a reasoner .safetensors"
    ),
    api_key_env: str | None = typer.Option(
        None, help="environment variable holding the API key that POST endpoints then require (X-API-Key)"
    ),
    cors_origin: list[str] = typer.Option([], help="allow this browser origin (repeat; default: no CORS)"),
    concurrency: int | None = typer.Option(None, help="requests computed at once (default: the cores)"),
    queue_limit: int = typer.Option(16, help="requests waiting beyond that; more get 503 + Retry-After"),
    max_upload_mb: float = typer.Option(32.0, help="largest request body"),
    max_files: int = typer.Option(16, help="most files per /v1/detect request"),
    threads: int = typer.Option(1, help="torch threads per request computation"),
) -> None:
    """Serve POST /v1/detect, POST /v1/explain, the review queue and the web page at http://HOST:PORT/."""
    from aigclab.serve.service import ServeConfig

    if ctx.invoked_subcommand is not None:
        return
    try:
        from aigclab.serve.app import create_app
        from aigclab.serve.service import Service
    except ImportError as err:
        raise AigclabError(
            f"aigclab serve needs the [serve] extra: pip install 'aigclab[serve]' ({err})"
        ) from None
    if api_key_env and not _env(api_key_env):
        raise AigclabError(f"--api-key-env {api_key_env}: that environment variable is empty or unset")
    fields: dict[str, Any] = dict(
        host=host,
        port=port,
        detector=detector,
        data_dir=str(data_dir),
        review_db=str(review_db) if review_db else None,
        anomaly_model=anomaly_model,
        api_key_env=api_key_env,
        cors_origins=cors_origin,
        queue_limit=queue_limit,
        max_upload_mb=max_upload_mb,
        max_files=max_files,
    )
    if concurrency:
        fields["concurrency"] = concurrency
    config = ServeConfig(**fields)
    import torch
    import uvicorn

    torch.set_num_threads(threads)
    console.print(f"loading detector {detector!r} ...")
    service = Service.load(config)
    console.print(
        f"serving on http://{host}:{port}/ (data in {data_dir}; "
        f"{config.concurrency} at once, {config.queue_limit} queued)"
    )
    uvicorn.run(create_app(service), host=host, port=port, log_level="info", server_header=False)


def _env(name: str) -> str:
    import os

    return os.environ.get(name, "")
