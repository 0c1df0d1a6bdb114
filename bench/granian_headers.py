"""What response headers cost inside Granian, ASGI against RSGI: instructions per request of
a Granian worker whose app answers a small JSON body with its two base headers, then with
the six ``x-ratelimit-*`` headers issue 5 puts on every answer too (constant values: the
app's own work is the same in both), counted by callgrind as ``bench_worker_instr.py``
counts the gateway (dumps around a measured run, idle timers subtracted).

    python bench/granian_headers.py --requests 3000

The apps are this module's ``asgi0``/``asgi6`` and ``rsgi0``/``rsgi6``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench.*`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_worker_instr import counted  # after the sys.path fix
from bench.run import free_port

BODY = b'{"ok":true}'
BASE = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
RATE = [
    (b"x-ratelimit-limit-requests", b"600"),
    (b"x-ratelimit-remaining-requests", b"599"),
    (b"x-ratelimit-reset-requests", b"1s"),
    (b"x-ratelimit-limit-tokens", b"90000"),
    (b"x-ratelimit-remaining-tokens", b"89990"),
    (b"x-ratelimit-reset-tokens", b"0s"),
]

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def _asgi(extra: list[tuple[bytes, bytes]]) -> ASGIApp:
    headers = BASE + extra

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": BODY})

    return app


class _RSGI:
    def __init__(self, extra: list[tuple[bytes, bytes]]) -> None:
        # RSGI takes str pairs; Granian sets content-length itself
        self.headers = [(k.decode(), v.decode()) for k, v in BASE[:1] + extra]

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        await proto()
        proto.response_bytes(200, list(self.headers), BODY)


asgi0 = _asgi([])
asgi6 = _asgi(RATE)
rsgi0 = _RSGI([])
rsgi6 = _RSGI(RATE)

APPS = [("asgi0", "asgi"), ("asgi6", "asgi"), ("rsgi0", "rsgi"), ("rsgi6", "rsgi")]


def measure(app: str, interface: str, requests: int, idle: float) -> float:
    out = tempfile.mkdtemp()
    port = free_port()
    proc = subprocess.Popen(
        [
            "taskset", "-c", "0",
            "valgrind", "--tool=callgrind", "--trace-children=yes",
            f"--callgrind-out-file={out}/cg.%p",
            sys.executable, "-m", "granian", "--interface", interface, "--loop", "uvloop",
            "--workers", "1", "--port", str(port), "--log-level", "warning",
            f"bench.granian_headers:{app}",
        ],
        cwd=str(Path(__file__).resolve().parent.parent),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        return counted(port, out, 500, requests, 16, idle)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    rows = {}
    for app, interface in APPS:
        rows[app] = round(measure(app, interface, args.requests, args.idle))
        print(f"{app:6s} ({interface}) {rows[app]:10,} instructions/request", flush=True)
    for kind in ("asgi", "rsgi"):
        print(f"{kind}: the six headers add {rows[kind + '6'] - rows[kind + '0']:,}")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": sys.argv, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
