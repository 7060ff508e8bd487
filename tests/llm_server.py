"""A real HTTP server on 127.0.0.1 speaking the chat-completions protocol, with scripted replies.

Each scripted step is a reply text (str) or a dict with any of ``content``, ``status`` (HTTP code),
``delay`` (seconds before answering), ``raw`` (a body sent as is), ``finish`` (the finish reason,
default "stop") and, for a request with ``"stream": true``, ``chunk_delay`` (seconds between the
server-sent events, one per word; ``no_usage`` leaves out the usage event). Replies carry ``usage``
with one token per word. When the script
runs out, the last step repeats. A step may also be a callable that takes the request body and
returns a step (replies that depend on the request). Every request body is kept in ``requests`` for assertions.
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
        self.abandoned = 0  # streams the client closed before the end
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
            self.abandoned = 0

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
                if status == 200 and body.get("stream") and "raw" not in step:
                    self._stream(body, step)
                    return
                if "raw" in step:
                    payload = step["raw"].encode()
                elif status == 200:
                    payload = json.dumps(_completion(body, step.get("content", ""), step)).encode()
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

            def _stream(self, body: dict[str, Any], step: dict[str, Any]) -> None:
                words = step.get("content", "").split(" ")
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for i, word in enumerate(words):
                        time.sleep(step.get("chunk_delay", 0))
                        delta = {"content": word if i == 0 else " " + word}
                        self._event({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                    self._event(
                        {"choices": [{"index": 0, "delta": {}, "finish_reason": step.get("finish", "stop")}]}
                    )
                    if not step.get("no_usage"):  # llama-cpp-python's server sends none
                        self._event({"choices": [], "usage": _usage(body, step.get("content", ""))})
                    self.wfile.write(b"data: [DONE]\n\n")
                except (BrokenPipeError, ConnectionResetError):
                    server.abandoned += 1  # the client closed the stream

            def _event(self, data: dict[str, Any]) -> None:
                self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()

        return Handler

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _usage(body: dict[str, Any], content: str) -> dict[str, int]:
    prompt = sum(len(str(m["content"]).split()) for m in body.get("messages", []))
    return {"prompt_tokens": prompt, "completion_tokens": len(content.split())}


def _completion(body: dict[str, Any], content: str, step: dict[str, Any]) -> dict[str, Any]:
    message = {"role": "assistant", "content": content}
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": body.get("model", ""),
        "choices": [{"index": 0, "message": message, "finish_reason": step.get("finish", "stop")}],
        "usage": _usage(body, content),
    }
