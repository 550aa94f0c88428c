"""Make an image through the bot's HTTP API, follow it, save its files and check the signed webhook.

Only the standard library: copy this file and run

    python generate.py --api https://bot.example.com --key cfb_... --prompt "a lighthouse at dusk"

It listens for the webhook on --listen (default 127.0.0.1:8765); the bot must be able to reach it at
--hook-url (default http://<listen>/hook): for a bot elsewhere, put a public URL there. Every wait is
bounded by --timeout. Exit status 0 when the files are saved and the webhook's signature is right.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import queue
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TOLERANCE = 300  # seconds between the webhook's timestamp and our clock that we accept


def verify(secret: str, timestamp: str, body: bytes, signature: str, now: float) -> bool:
    """Whether a webhook is genuine and recent: X-Webhook-Signature is "v1=" and the hex HMAC-SHA256 of
    "<X-Webhook-Timestamp>.<raw body>" keyed with the secret (several, comma-separated, while it rotates)."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > TOLERANCE:
        return False
    expected = "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, part.strip()) for part in signature.split(","))


def call(method: str, url: str, key: str, body: dict | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Authorization": f"Bearer {key}"})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as refused:  # the API explains every refusal in JSON
        message = json.loads(refused.read() or b"{}").get("error", {}).get("message", refused.reason)
        sys.exit(f"{method} {url}: {refused.code} {message}")


def receive_webhooks(listen: str) -> tuple[ThreadingHTTPServer, queue.Queue]:
    """A tiny server that puts every POST's (headers, body) on the queue."""
    received: queue.Queue = queue.Queue()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.put((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    host, _, port = listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default=os.environ.get("COMFY_API_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--key", default=os.environ.get("COMFY_API_KEY"), required="COMFY_API_KEY" not in os.environ)
    parser.add_argument("--prompt", default="a lighthouse at dusk, oil painting")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--listen", default="127.0.0.1:8765")
    parser.add_argument("--hook-url")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between looks at the generation")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    api = args.api.rstrip("/") + "/api/v1"
    deadline = time.monotonic() + args.timeout

    server, received = receive_webhooks(args.listen)
    hook_url = args.hook_url or f"http://{server.server_address[0]}:{server.server_address[1]}/hook"
    _, answer = call("PUT", f"{api}/webhook", args.key, {"url": hook_url})
    secret = json.loads(answer)["secret"]
    print(f"webhook set to {hook_url}")

    request = {"kind": "txt2img", "prompt": args.prompt, "width": args.size, "height": args.size}
    _, answer = call("POST", f"{api}/generations", args.key, request)
    job_id = json.loads(answer)["id"]
    print(f"queued generation {job_id}")

    state, seen = {}, None
    while time.monotonic() < deadline:
        _, answer = call("GET", f"{api}/generations/{job_id}", args.key)
        state = json.loads(answer)
        if state["state"] != seen:
            seen = state["state"]
            print(f"state: {seen}")
        if seen in ("done", "failed", "cancelled"):
            break
        time.sleep(args.poll)
    if state.get("state") != "done":
        print(f"generation {job_id} did not finish: {state.get('error') or state.get('state')}", file=sys.stderr)
        return 1

    args.out.mkdir(parents=True, exist_ok=True)
    for index, url in enumerate(state["files"]):
        _, data = call("GET", url, args.key)
        path = args.out / f"generation-{job_id}-{index}.png"
        path.write_bytes(data)
        print(f"saved {path} ({len(data)} bytes)")

    while True:  # the webhook of this generation; others (earlier ones of the key) are skipped
        try:
            headers, body = received.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            print("no webhook arrived in time", file=sys.stderr)
            return 1
        event = json.loads(body)
        if event.get("id") == job_id:
            break
    if not verify(secret, headers.get("X-Webhook-Timestamp", ""), body, headers.get("X-Webhook-Signature", ""),
                  time.time()):
        print("the webhook's signature is wrong: ignore it", file=sys.stderr)
        return 1
    print(f"webhook {event['event']} for generation {job_id}: signature verified")
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
