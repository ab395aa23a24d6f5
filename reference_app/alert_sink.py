"""An alert sink for local runs: the receiver of every Alertmanager notification, kept in files.

The local Alertmanager delivers each receiver's notifications as webhooks to
`POST /receivers/<receiver name>` (see `reference_app.ops.rules.local_alertmanager_config`);
the sink appends each one, as received, to `<dir>/<receiver name>.jsonl` (one JSON object a
line: `received_at`, `receiver`, `notification`, Alertmanager's webhook payload), so what
would have gone to Slack, PagerDuty or e-mail can be read, grepped and asserted on.

    python -m reference_app.alert_sink --port 9099 --dir data/alerts
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_RECEIVER = re.compile(r"^/receivers/([A-Za-z0-9._-]+)$")


def notifications(folder: Path) -> list[dict[str, Any]]:
    """Every notification kept in `folder`, receiver by receiver, in the order received."""
    found: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.jsonl")):
        found.extend(
            json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line
        )
    return sorted(found, key=lambda item: float(item.get("received_at", 0)))


def serve(host: str, port: int, folder: Path) -> ThreadingHTTPServer:
    """A server (not yet serving) that keeps each POST to `/receivers/<name>` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            match = _RECEIVER.match(self.path)
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            if match is None:
                self._answer(404, {"error": f"no receiver at {self.path!r}: POST /receivers/NAME"})
                return
            try:
                notification = json.loads(body)
            except ValueError as exc:
                self._answer(400, {"error": f"the body is not JSON: {exc}"})
                return
            receiver = match.group(1)
            line = {"received_at": time.time(), "receiver": receiver, "notification": notification}
            with lock, (folder / f"{receiver}.jsonl").open("a", encoding="utf-8") as file:
                file.write(json.dumps(line) + "\n")
            self._answer(200, {"status": "kept"})

        def _answer(self, status: int, body: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"alert sink: {format % args}\n")

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    """Run the sink until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m reference_app.alert_sink", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9099)
    parser.add_argument("--dir", type=Path, default=Path("data/alerts"), help="the alerts folder")
    args = parser.parse_args(argv)
    try:
        server = serve(args.host, args.port, args.dir)
    except OSError as exc:
        sys.stderr.write(f"alert sink: cannot listen on {args.host}:{args.port}: {exc}\n")
        return 1
    sys.stderr.write(
        f"alert sink: listening on {args.host}:{args.port}, keeping notifications in {args.dir}\n"
    )

    def stop(*_: Any) -> None:
        # shutdown() waits for serve_forever() to return: not from its own thread.
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
