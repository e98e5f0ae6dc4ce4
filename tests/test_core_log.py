"""agent/runtime/core_log.py: refused TLS handshakes read from gRPC core's log."""

from __future__ import annotations

import asyncio
import os

from agent.runtime.core_log import CoreLogTap, classify

CORE = "I1203 14:44:19.796834    6603 ssl_transport_security.cc:2563] Handshake failed with error SSL_ERROR_SSL: "


def test_classify_names_openssl_reasons() -> None:
    assert classify(CORE + "error:1000007d:...:CERTIFICATE_VERIFY_FAILED: certificate has expired") \
        == "tls_certificate_expired"
    assert classify(CORE + "error:1000007d:...:CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate") \
        == "tls_untrusted_ca"
    assert classify(CORE + "error:100000c0:...:PEER_DID_NOT_RETURN_A_CERTIFICATE") == "tls_no_certificate"
    assert classify(CORE + "error:100000f7:...:WRONG_VERSION_NUMBER") == "tls_not_tls"
    assert classify(CORE + "something new") == "tls_handshake_failed"


def test_classify_ignores_other_lines_and_our_own_report() -> None:
    assert classify("I1203 chttp2_transport.cc:123] connection closed") is None
    # What the agent logs about a refusal must not count as another refusal.
    assert classify("WARNING shoal.agent: n1: refused a TLS handshake (tls_untrusted_ca): error SSL_ERROR_SSL") \
        is None


async def test_the_tap_passes_stderr_through_and_reports_handshake_lines(tmp_path, capfd) -> None:
    seen: list[tuple[str, str]] = []
    tap = CoreLogTap(asyncio.get_running_loop(), lambda reason, line: seen.append((reason, line)))
    tap.start()
    try:
        os.write(2, b"plain line\n" + CORE.encode() + b"x: certificate has expired\n")
        deadline = asyncio.get_running_loop().time() + 5
        while not seen and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
    finally:
        tap.stop()
    assert [r for r, _ in seen] == ["tls_certificate_expired"]
    assert "plain line" in capfd.readouterr().err
