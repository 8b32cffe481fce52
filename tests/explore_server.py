"""Start the explorer's web server for the tests: ``zoo explore`` or a Space's ``app.py``, in a subprocess that
runs under the suite's network guard (:mod:`netguard`).

Every connection, lookup or send the server tries beyond loopback is refused and written to a log file, so a
test can assert that serving the page made no outgoing request (:attr:`ExploreServer.blocked`). The server
prints its URL; :meth:`ExploreServer.start` waits for that line. Gradio's temporary files go to a folder of
the test's own.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent
URL = re.compile(r"(http://127\.0\.0\.1:\d+)/?")

#: The subprocess: the guard installed, refusals logged, then the command (argv after "--").
GUARDED = f"""
import os, runpy, sys
sys.path.insert(0, {str(TESTS)!r})
import pytest
from netguard import NetworkGuard

class LoggedGuard(NetworkGuard):
    def refuse(self, what):
        with open(os.environ["ZOO_TEST_BLOCKED_LOG"], "a") as log:
            log.write(what + "\\n")
        super().refuse(what)

LoggedGuard().install(pytest.MonkeyPatch())
args = sys.argv[sys.argv.index("--") + 1:]
if args[0] == "zoo":
    from zoo.cli import main
    sys.exit(main(args[1:]))
sys.argv = args
runpy.run_path(args[0], run_name="__main__")
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on TCP ``port``, from /proc/net/tcp and tcp6 (Linux)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        path = Path(table)
        if not path.is_file():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # the kernel prints each 32-bit word in host (little-endian) order
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, words))
    return found


class ExploreServer:
    """One server process: ``command`` is ``["zoo", "explore", ...]`` or ``[path/to/app.py]``."""

    def __init__(self, command: list[str], folder: Path, *, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.command = command
        self.blocked_log = folder / "blocked.log"
        self.env = {**os.environ, "GRADIO_TEMP_DIR": str(folder / "gradio"),
                    "ZOO_TEST_BLOCKED_LOG": str(self.blocked_log), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.cwd = cwd
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.url = ""

    def start(self, timeout: float = 180.0) -> ExploreServer:
        """Start the process and wait for the line with its URL; a RuntimeError with its output otherwise."""
        self.process = subprocess.Popen([sys.executable, "-c", GUARDED, "--", *self.command], env=self.env,
                                        cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        found = threading.Event()

        def read() -> None:
            for line in self.process.stdout:
                self.output.append(line)
                match = URL.search(line)
                if match and not self.url:
                    self.url = match.group(1)
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the explorer did not start ({' '.join(self.command)}):\n{self.log()}")
        return self

    def log(self) -> str:
        return "".join(self.output)[-6000:]

    @property
    def blocked(self) -> list[str]:
        """What the server tried to reach beyond loopback (refused)."""
        return self.blocked_log.read_text().splitlines() if self.blocked_log.is_file() else []

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Ctrl+C (the server closes itself), then a kill if it has not ended within 20 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(20)
