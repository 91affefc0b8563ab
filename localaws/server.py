"""The embedded stand-in for AWS: moto's server on 127.0.0.1 (its transactions patched,
`localaws.moto_patch`), and child processes that announce their URL. Used by `churn-worker local`,
the tests and the benchmarks; nothing here is part of the worker that runs on AWS.

`python -m localaws [--port N]` runs the server as a process of its own.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from localaws.moto_patch import patch_moto_batch_statements, patch_moto_transactions


def start_moto(port: int = 0) -> tuple[Any, str]:
    """Start moto's server on a loopback port (0: a free one); returns (server, endpoint URL)."""
    from moto.server import ThreadedMotoServer

    patch_moto_transactions()
    patch_moto_batch_statements()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per AWS call is noise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def main() -> None:
    """`python -m localaws [--port N]`: moto's server (patched) as a process of its own,
    for end-to-end tests that kill and restart workers around it."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m localaws", description=main.__doc__)
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (printed)")
    serve_moto_until_stopped(parser.parse_args().port)


def serve_moto_until_stopped(port: int) -> None:
    """Run moto's server (patched) on `port`, print `listening on URL` for `ChildServer`, and exit 0
    on SIGTERM or SIGINT."""
    import signal
    import sys

    server, url = start_moto(port)
    print(f"listening on {url}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    server.stop()
    sys.exit(0)


class ChildServer:
    """A server in a process of its own (moto, the model endpoint) that prints 'listening on URL'
    when ready; stopped with SIGTERM, killed if it does not go."""

    def __init__(self, args: list[str], name: str, timeout: float = 120) -> None:
        import re
        import subprocess
        import time

        self.name = name
        self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + timeout
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                self.url = match.group(1)
                break
            if time.monotonic() > deadline:
                break
        else:
            self.stop()
            raise RuntimeError(f"{name} did not start (exit code {self._proc.poll()})")
        threading.Thread(target=self._proc.stdout.read, daemon=True).start()  # keep the pipe drained

    def stop(self) -> None:
        import subprocess

        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
