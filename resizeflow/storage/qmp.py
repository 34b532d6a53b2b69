"""A small QMP client: QEMU's JSON monitor protocol over a unix socket.

One JSON object per line each way. The daemon greets, the client enters
command mode with ``qmp_capabilities``, then every command gets exactly one
``return`` or ``error``; asynchronous ``event`` lines may arrive between them
and are skipped here (the storage backend polls for what it waits on).
"""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path
from typing import Any


class QmpError(Exception):
    """A command the daemon answered with an error (its class and description)."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"{command}: {error_class}: {desc}")
        self.error_class = error_class
        self.desc = desc


class QmpClient:
    """One monitor connection; not thread-safe (the backend holds a lock around it)."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file: Any = None

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except OSError:
            sock.close()
            raise
        self._sock, self._file = sock, sock.makefile("rwb")
        greeting = self._read()
        if "QMP" not in greeting:
            self.close()
            raise ConnectionError(f"{self.path} is not a QMP monitor: {greeting!r}")
        self.execute("qmp_capabilities")

    def close(self) -> None:
        for closing in (self._file, self._sock):
            if closing is not None:
                with contextlib.suppress(OSError):
                    closing.close()
        self._sock = self._file = None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def _read(self) -> dict[str, Any]:
        line = self._file.readline()
        if not line:
            self.close()
            raise ConnectionError(f"QMP monitor {self.path} closed the connection")
        found: dict[str, Any] = json.loads(line)
        return found

    def execute(self, command: str, **arguments: Any) -> Any:
        """Run ``command`` and return its ``return`` value; an error raises QmpError."""
        if self._file is None:
            raise ConnectionError(f"QMP monitor {self.path} is not connected")
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        try:
            self._file.write(json.dumps(request).encode() + b"\n")
            self._file.flush()
            while True:
                reply = self._read()
                if "return" in reply:
                    return reply["return"]
                if "error" in reply:
                    err = reply["error"]
                    raise QmpError(command, str(err.get("class")), str(err.get("desc")))
                # An event: not an answer to this command.
        except (OSError, ValueError):
            self.close()
            raise
