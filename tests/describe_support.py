"""Test support for the describe stage: a tiny dataset folder and a loopback chat-completions server."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd

from components import atomic
from components.data import manifest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_dataset(root: Path, per_class: dict[str, int], size: int = 32, seed: int = 0,
                 splits: tuple[str, ...] = ("train", "test")) -> pd.DataFrame:
    """Write a dataset folder: noisy skin-coloured images with a dark disc, its mask, and manifest.csv."""
    rng = np.random.default_rng(seed)
    rows = []
    yy, xx = np.mgrid[:size, :size]
    for category, n in per_class.items():
        for i in range(n):
            image_id = f"{category}_{i:03d}"
            radius = rng.uniform(size * 0.12, size * 0.4)
            cy, cx = rng.uniform(size * 0.35, size * 0.65, 2)
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2).astype(np.uint8)
            skin = np.array([224, 180, 150]) + rng.normal(0, 6, (size, size, 3))
            lesion = rng.uniform(40, 170, 3) + rng.normal(0, 10, (size, size, 3))
            image = np.where(mask[..., None] > 0, lesion, skin).clip(0, 255).astype(np.uint8)
            atomic.write_png(root / "images" / f"{image_id}.png", image)
            atomic.write_png(root / "masks" / f"{image_id}.png", mask * 255)
            rows.append({"image_id": image_id, "category": category, "split": splits[i % len(splits)],
                         "image_path": f"images/{image_id}.png", "mask_path": f"masks/{image_id}.png",
                         "description": "", "source": "real", "origin": "unit-test", "width": size,
                         "height": size})
    df = pd.DataFrame(rows)
    manifest.write_manifest(df, root)
    return df


class ChatServer:
    """Loopback server speaking POST /v1/chat/completions; behaviour per request from a FIFO script.

    Script actions: ok | 429 (with Retry-After: `retry_after`) | 400 | 500 | 500_echo (error body echoing the Authorization header) | 401 |
    invalid (answer without the prefix) | wrong_category | malformed (JSON without choices) |
    notjson | echo (a valid answer that repeats `echo_text` and the Authorization header) | sleep:<seconds>.
    When the script is empty, `default` is used.
    """

    def __init__(self, prompt_tokens: int = 1000, completion_tokens: int = 100, delay_s: float = 0.0):
        self.script: list[str] = []
        self.default = "ok"
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.delay_s = delay_s
        self.retry_after = "0"
        self.echo_text = ""
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}/v1"

    def __enter__(self) -> "ChatServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next_action(self) -> str:
        with self._lock:
            return self.script.pop(0) if self.script else self.default

    def answer_for(self, body: dict) -> str:
        """A valid answer: the prefix with the prompt's category, then text that depends on the image."""
        text, image = body["messages"][0]["content"][0]["text"], body["messages"][0]["content"][1]
        category = re.search(r"Analyze this (.+?) dermatology image", text).group(1)
        digest = hashlib.sha256(image["image_url"]["url"].encode()).hexdigest()[:8]
        return (f"A dermoscopic lesion photo of {category} for skin cancer diagnosis, an asymmetric lesion with "
                f"an atypical pigment network and irregular globules, specimen {digest}.")

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, payload: bytes, headers: dict | None = None):
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                url = body["messages"][0]["content"][1]["image_url"]["url"]
                png = base64.b64decode(url.split(",", 1)[1])
                action = server._next_action()
                with server._lock:
                    server.requests.append({"path": self.path, "auth": self.headers.get("authorization"),
                                            "body": body, "png_ok": url.startswith("data:image/png;base64,")
                                            and png.startswith(PNG_MAGIC), "action": action})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay_s)
                    self._respond(action, body)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _respond(self, action: str, body: dict):
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": {"message": "not found"}}')
                if action.startswith("sleep:"):
                    time.sleep(float(action.split(":")[1]))
                    action = "ok"
                error = {"429": (429, "Rate limit reached"), "500": (500, "internal error"),
                         "400": (400, "image could not be processed"),
                         "401": (401, "Incorrect API key provided"),
                         "500_echo": (500, f"upstream failed for {self.headers.get('authorization')}")}
                if action in error:
                    status, message = error[action]
                    return self._send(status, json.dumps({"error": {"message": message}}).encode(),
                                      {"retry-after": server.retry_after} if status == 429 else None)
                if action == "malformed":
                    return self._send(200, b'{"unexpected": true}')
                if action == "notjson":
                    return self._send(200, b"<html>gateway</html>")
                if action == "echo":
                    content = (server.answer_for(body)[:-1] + f", reference {server.echo_text} "
                               f"({self.headers.get('authorization')}).")
                    return self._send(200, json.dumps(server.completion(body, content)).encode())
                content = {"invalid": "Sure! This image shows a skin lesion.",
                           "wrong_category": "a dermoscopic lesion photo of dermatofibroma for skin cancer "
                                             "diagnosis, a firm papule with a central white patch and a "
                                             "delicate peripheral network."}.get(action) or server.answer_for(body)
                self._send(200, json.dumps(server.completion(body, content)).encode())

        return Handler

    def completion(self, body: dict, content: str) -> dict:
        return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                          "total_tokens": self.prompt_tokens + self.completion_tokens}}


class HangingServer:
    """Loopback TCP server that accepts every connection, reads what the client sends and never answers."""

    def __init__(self):
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._received: list[bytearray] = []
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"

    @property
    def posts(self) -> int:
        """Chat-completions requests received (each attempt after a timeout comes on a new connection)."""
        with self._lock:
            return sum(bytes(buf).count(b"POST /v1/chat/completions ") for buf in self._received)

    def __enter__(self) -> "HangingServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)
        with self._lock:
            for conn in self._conns:
                conn.close()
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            buf = bytearray()
            with self._lock:
                self._conns.append(conn)
                self._received.append(buf)
            threading.Thread(target=self._read, args=(conn, buf), daemon=True).start()

    def _read(self, conn: socket.socket, buf: bytearray) -> None:
        conn.settimeout(0.05)
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return  # the client gave up and closed
            with self._lock:
                buf.extend(chunk)
