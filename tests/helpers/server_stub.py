"""A tiny HTTP stub that answers like llama-server's metadata endpoints and then misbehaves on
purpose: malformed or truncated bodies, 429 / 5xx with Retry-After, refused keys. It never stands in
for generation or scoring (those are tested on a real llama-server); it produces the protocol faults
a real server will not produce on demand."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, dict[str, str], bytes]


def js(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode()


PROPS = {
    "total_slots": 2,
    "build_info": "b0-stub",
    "model_path": "/models/stub.gguf",
    "chat_template": "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}",
    "bos_token": "",
    "eos_token": "</s>",
    "default_generation_settings": {"n_ctx": 4096},
}
MODELS = {"object": "list", "data": [{"id": "stub.gguf", "object": "model", "owned_by": "llamacpp"}]}


class Stub:
    """``routes`` maps (method, path) to a function of the request body giving a Reply; ``key``
    (if set) is required as a bearer token on every path but /health."""

    def __init__(self, key: str | None = None) -> None:
        self.key = key
        self.calls: list[tuple[str, str, Any]] = []
        self.routes: dict[tuple[str, str], Callable[[Any], Reply]] = {
            ("GET", "/health"): lambda b: js({"status": "ok"}),
            ("GET", "/props"): lambda b: js(PROPS),
            ("GET", "/v1/models"): lambda b: js(MODELS),
            ("POST", "/tokenize"): lambda b: js({"tokens": [ord(c) % 1000 for c in b.get("content", "")]}),
            ("POST", "/detokenize"): lambda b: js({"content": "".join(chr(t) for t in b.get("tokens", []))}),
        }
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self, method: str) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    body = json.loads(raw) if raw else None
                except json.JSONDecodeError:
                    body = None
                stub.calls.append((method, self.path, body))
                if (
                    stub.key
                    and self.path != "/health"
                    and self.headers.get("Authorization") != f"Bearer {stub.key}"
                ):
                    status, headers, data = js({"error": {"code": 401, "message": "Invalid API Key"}}, 401)
                else:
                    fn = stub.routes.get((method, self.path))
                    status, headers, data = fn(body) if fn else js({"error": {"message": "not found"}}, 404)
                truncate = headers.pop("X-Stub-Truncate", None)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                # A truncated answer: promise more bytes than are sent, then hang up.
                self.send_header("Content-Length", str(len(data) + (50 if truncate else 0)))
                self.end_headers()
                self.wfile.write(data)
                if truncate:
                    self.close_connection = True

            def do_GET(self) -> None:  # noqa: N802
                self._serve("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._serve("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Stub:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
