"""Counting the TLS handshakes that gRPC's C core refuses.

grpc-python gives a server no hook on a failed handshake: the connection
never becomes a call, so no interceptor sees the expired certificate, the
certificate from a rotated-out CA or the plaintext client. The core does log
each one to the process's stderr (`ssl_transport_security.cc ... Handshake
failed with error SSL_ERROR_SSL: ... CERTIFICATE_VERIFY_FAILED: certificate
has expired`). An agent process therefore runs its stderr (file descriptor 2)
through a pipe: a reader thread copies every byte to the real stderr
unchanged and hands the handshake lines, classified by OpenSSL's reason, to
the event loop, which logs and counts them as `rejected_inputs{reason=tls_*}`.

The thread never takes a lock that a writer to stderr might hold (it does not
log; it only writes raw bytes and calls `loop.call_soon_threadsafe`), so a
full pipe can only make writers wait for it, never deadlock. It is installed
by `shoal agent` (one agent per process), never by in-process test agents.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Callable

# (substring of OpenSSL's message, reason label); first match wins.
_REASONS = (
    ("certificate has expired", "tls_certificate_expired"),
    ("certificate is not yet valid", "tls_certificate_not_yet_valid"),
    ("unable to get local issuer certificate", "tls_untrusted_ca"),
    ("self signed certificate", "tls_untrusted_ca"),
    ("self-signed certificate", "tls_untrusted_ca"),
    ("certificate signature failure", "tls_untrusted_ca"),
    ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "tls_no_certificate"),
    ("WRONG_VERSION_NUMBER", "tls_not_tls"),
    ("HTTP_REQUEST", "tls_not_tls"),
)


def classify(line: str) -> str | None:
    """The rejected-input reason of one core log line, or None if it is not a refused handshake."""
    if "Handshake failed" not in line or "ssl_transport_security" not in line:
        return None
    for needle, reason in _REASONS:
        if needle in line:
            return reason
    return "tls_handshake_failed"


class CoreLogTap:
    """Routes this process's fd 2 through a pipe; `on_refused(reason, line)` runs on `loop`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_refused: Callable[[str, str], None]) -> None:
        self._loop = loop
        self._on_refused = on_refused
        self._saved_fd = -1
        self._write_fd = -1
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        read_fd, self._write_fd = os.pipe()
        self._saved_fd = os.dup(2)
        os.dup2(self._write_fd, 2)
        self._thread = threading.Thread(target=self._pump, args=(read_fd, self._saved_fd),
                                        name="core-log-tap", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Puts the real stderr back; the thread drains what was written and ends."""
        if self._thread is None:
            return
        os.dup2(self._saved_fd, 2)
        os.close(self._write_fd)
        self._thread.join(timeout=2.0)
        self._thread = None

    def _pump(self, read_fd: int, out_fd: int) -> None:
        pending = b""
        try:
            while True:
                data = os.read(read_fd, 65536)
                if not data:
                    break
                _write_all(out_fd, data)
                pending += data
                *lines, pending = pending.split(b"\n")
                if len(pending) > 65536:  # a line without end: inspect no further than this
                    lines.append(pending)
                    pending = b""
                for raw in lines:
                    text = raw.decode("utf-8", "replace")
                    reason = classify(text)
                    if reason is not None:
                        self._report(reason, text)
        finally:
            os.close(read_fd)
            os.close(out_fd)

    def _report(self, reason: str, line: str) -> None:
        try:
            self._loop.call_soon_threadsafe(self._on_refused, reason, line)
        except RuntimeError:
            pass  # the loop is closed: the process is exiting


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except OSError:
            return  # the real stderr is gone: keep draining, drop the copy
        view = view[n:]
