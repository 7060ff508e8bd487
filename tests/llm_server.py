"""A real HTTP server on 127.0.0.1 speaking the chat-completions protocol, with scripted replies.

Each scripted step is a reply text (str) or a dict with any of ``content``, ``status`` (HTTP code),
``delay`` (seconds before answering) and ``raw`` (a body sent as is). When the script runs out, the
last step repeats. A step may also be a callable that takes the request body and returns a step
(replies that depend on the request). Replies report ``usage`` (whitespace-separated words as tokens).
Every request body is kept in ``requests`` for assertions.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Step = str | dict[str, Any] | Callable[[dict[str, Any]], Any]


class ScriptedChatServer:
    def __init__(self) -> None:
        self.script: list[Step] = ["ok"]
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def set_script(self, *steps: Step) -> None:
        with self._lock:
            self.script = list(steps)
            self.requests = []

    def _next(self, body: dict[str, Any]) -> Step:
        with self._lock:
            self.requests.append(body)
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                step = server._next(body)
                step = step(body) if callable(step) else step
                step = {"content": step} if isinstance(step, str) else step
                time.sleep(step.get("delay", 0))
                status = step.get("status", 200)
                if "raw" in step:
                    payload = step["raw"].encode()
                elif status == 200:
                    payload = json.dumps(_completion(body, step.get("content", ""))).encode()
                else:
                    payload = json.dumps({"error": {"message": f"scripted {status}"}}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        return Handler

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _completion(body: dict[str, Any], content: str) -> dict[str, Any]:
    prompt = json.dumps(body.get("messages", []))
    return {
        "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(content.split())},
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": body.get("model", ""),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
    }
