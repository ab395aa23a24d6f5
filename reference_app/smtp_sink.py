"""An SMTP sink for local runs: a real SMTP server (aiosmtpd) that keeps every message it receives.

Each message is written to the mail folder as `<n>-<timestamp>.eml` (RFC 5322, as received), so a
reminder e-mail can be opened, grepped or asserted on. It answers like any mail server, so the
notification service uses plain aiosmtplib against it.

    python -m reference_app.smtp_sink --port 1025 --dir data/mail
"""

from __future__ import annotations

import argparse
import itertools
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiosmtpd.controller import Controller

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP, Envelope, Session


class MailFolder:
    """An aiosmtpd handler that stores each accepted message as a file in `folder`."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        start = len(list(folder.glob("*.eml")))
        self._numbers = itertools.count(start + 1)
        self._lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Keep the message; answer 250."""
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode()
        with self._lock:
            number = next(self._numbers)
        path = self.folder / f"{number:04d}-{time.strftime('%Y%m%dT%H%M%S')}.eml"
        path.write_bytes(content)
        return "250 Message accepted for delivery"


def messages(folder: Path) -> list[Path]:
    """The messages kept in `folder`, oldest first."""
    return sorted(folder.glob("*.eml"))


def main(argv: list[str] | None = None) -> int:
    """Run the sink until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m reference_app.smtp_sink", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=Path, default=Path("data/mail"), help="the mail folder")
    args = parser.parse_args(argv)
    controller = Controller(MailFolder(args.dir), hostname=args.host, port=args.port)
    try:
        controller.start()
    except (OSError, RuntimeError) as exc:
        sys.stderr.write(f"smtp sink: cannot listen on {args.host}:{args.port}: {exc}\n")
        return 1
    sys.stderr.write(
        f"smtp sink: listening on {args.host}:{args.port}, keeping mail in {args.dir}\n"
    )
    stopped = threading.Event()

    def stop(*_: Any) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopped.wait()
    controller.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
