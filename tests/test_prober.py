"""One cycle against real and fault-injecting servers: reasons, phases, and honest numbers."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from probe.probers import InfoMode
from probe.probers.grpc import GrpcProber, Phase
from probe.probers.ledger import ConnectionLedger
from probe.result import FailureReason
from tests.support import (
    Behaviour,
    Certs,
    CountingProxy,
    MilvusLite,
    SilentServer,
    free_port,
    make_certs,
    milvus_double,
    target,
    wait_until,
)


def test_real_milvus_answers_with_version_and_server_info(milvus: MilvusLite) -> None:
    result = GrpcProber().run(target(uri=milvus.address), InfoMode.FULL)
    assert result.success, result.error
    assert result.healthy is True
    assert result.quota_states == ()
    assert result.version == "milvus_lite-3.2.2"
    assert result.server_info is not None and result.server_info.deploy_mode == "embedded"
    assert list(result.phases) == [Phase.RESOLVE, Phase.CONNECT, Phase.RPC, Phase.INFO, Phase.CLOSE]
    assert result.duration >= sum(result.phases.values())


def test_get_version_rpc(milvus: MilvusLite) -> None:
    result = GrpcProber().run(target(uri=milvus.address, **{"probe.rpc": "get_version"}))
    assert result.success and result.version == "milvus_lite-3.2.2"
    assert result.healthy is None  # GetVersion says nothing about health


def test_every_cycle_opens_and_closes_its_own_connection(milvus: MilvusLite) -> None:
    """Server-side evidence: N cycles → N accepted TCP connections, all closed by us."""
    proxy = CountingProxy(("127.0.0.1", milvus.port))
    ledger = ConnectionLedger()
    prober = GrpcProber(ledger=ledger)
    t = target(uri=proxy.address)
    cycles = 30
    try:
        for _ in range(cycles):
            assert prober.run(t).success
            # opened and closed agree after every cycle
            assert (
                ledger.snapshot()[(t.alias, t.address)][0]
                == ledger.snapshot()[(t.alias, t.address)][1]
            )
        assert ledger.open_count() == 0
        wait_until(lambda: proxy.counts() == (cycles, cycles), 5, "the server to see every close")
    finally:
        proxy.stop()


def test_injected_rpc_delay_shows_in_rpc_phase_not_connect() -> None:
    # 300 ms: far above loopback cycle times even on a loaded 2-core machine, so the
    # bounds can be loose and still tell "in rpc" from "in connect".
    delay = 0.3
    with milvus_double(Behaviour(check_health_delay=delay)) as double:
        results = [GrpcProber().run(target(uri=double.address)) for _ in range(5)]
    assert all(r.success for r in results)
    rpc = statistics.median(r.phases[Phase.RPC] for r in results)
    connect = statistics.median(r.phases[Phase.CONNECT] for r in results)
    assert delay <= rpc < delay * 1.5
    assert connect < delay / 3


def test_connect_phase_carries_network_latency(milvus: MilvusLite) -> None:
    """Latency on the path (server → client bytes held back) lands in connect, before the RPC."""
    proxy = CountingProxy(("127.0.0.1", milvus.port), delay=0.03)
    try:
        result = GrpcProber().run(target(uri=proxy.address))
    finally:
        proxy.stop()
    assert result.success
    assert result.phases[Phase.CONNECT] >= 0.03  # the server's HTTP/2 SETTINGS came late
    assert result.phases[Phase.RPC] >= 0.03  # and so did the answer


def test_refused() -> None:
    result = GrpcProber().run(target(uri=f"127.0.0.1:{free_port()}"))
    assert (result.reason, result.failed_phase) == (FailureReason.REFUSED, Phase.CONNECT)
    assert "Connection refused" in result.error


def test_dns() -> None:
    result = GrpcProber().run(target(uri="no-such-host.invalid:19530"))
    assert (result.reason, result.failed_phase) == (FailureReason.DNS, Phase.RESOLVE)
    assert Phase.CONNECT not in result.phases  # nothing was dialled


def test_timeout_when_server_accepts_and_never_answers(silent: SilentServer) -> None:
    result = GrpcProber().run(
        target(
            uri=f"127.0.0.1:{silent.port}", **{"probe.timeout": "300ms", "probe.interval": "1s"}
        )
    )
    assert (result.reason, result.failed_phase) == (FailureReason.TIMEOUT, Phase.CONNECT)
    assert 0.3 <= result.duration < 2.0  # the deadline, not the 5 s default


def test_timeout_when_rpc_is_slower_than_the_deadline() -> None:
    with milvus_double(Behaviour(check_health_delay=0.5)) as double:
        result = GrpcProber().run(
            target(uri=double.address, **{"probe.timeout": "200ms", "probe.interval": "1s"})
        )
    assert (result.reason, result.failed_phase) == (FailureReason.TIMEOUT, Phase.RPC)
    assert result.facts.grpc_code == "DEADLINE_EXCEEDED"


def test_unauthenticated_and_the_metadata_sent() -> None:
    with milvus_double(Behaviour(token="root:Milvus")) as double:
        bad = GrpcProber().run(target(uri=double.address, token="root:wrong"))
        good = GrpcProber().run(
            target(uri=double.address, user="root", password="Milvus", db_name="default"),
            InfoMode.FULL,
        )
        api_key = GrpcProber().run(target(uri=double.address, token="root:Milvus"))
        calls = list(double.calls)
        connect = double.connect_requests[-1]
    assert bad.reason is FailureReason.UNAUTHENTICATED
    assert good.success and api_key.success
    # base64("root:Milvus") and the database, as Milvus reads them
    assert calls[1][1]["authorization"] == "cm9vdDpNaWx2dXM="
    assert calls[1][1]["dbname"] == "default"
    # Connect identifies us
    assert connect.client_info.sdk_type == "milvus-probe"
    assert connect.client_info.reserved["alias"] == "default"
    assert connect.client_info.user == "root"


def test_db_not_found_comes_from_connect() -> None:
    with milvus_double() as double:
        result = GrpcProber().run(target(uri=double.address, db_name="nope"), InfoMode.FULL)
    assert (result.reason, result.failed_phase) == (FailureReason.DB_NOT_FOUND, Phase.INFO)
    assert result.status_code == 800


def test_not_ready_status() -> None:
    with milvus_double(Behaviour(status_code=1)) as double:
        result = GrpcProber().run(target(uri=double.address))
    assert (result.reason, result.failed_phase) == (FailureReason.NOT_READY, Phase.RPC)


def test_unhealthy_keeps_reasons_and_quota_states() -> None:
    behaviour = Behaviour(healthy=False, reasons=["querynode 3 is down"], quota_states=[4, 5])
    with milvus_double(behaviour) as double:
        result = GrpcProber().run(target(uri=double.address))
    assert result.reason is FailureReason.UNHEALTHY
    assert result.health_reasons == ("querynode 3 is down",)
    assert result.quota_states == ("DenyToRead", "DenyToWrite")
    assert "querynode 3 is down" in result.error


def test_unimplemented_when_the_port_is_not_milvus() -> None:
    with milvus_double(services=False) as double:
        result = GrpcProber().run(target(uri=double.address))
    assert (result.reason, result.failed_phase) == (FailureReason.UNIMPLEMENTED, Phase.RPC)


def test_tls_untrusted_server_certificate(certs: Certs) -> None:
    with milvus_double(tls=certs.server_credentials()) as double:
        untrusted = GrpcProber().run(
            target(uri=f"https://localhost:{double.port}", server_pem_path=str(certs.other_ca))
        )
        trusted = GrpcProber().run(
            target(uri=f"https://localhost:{double.port}", server_pem_path=str(certs.ca))
        )
        plaintext = GrpcProber().run(target(uri=f"localhost:{double.port}"))
    assert (untrusted.reason, untrusted.failed_phase) == (FailureReason.TLS, Phase.CONNECT)
    assert trusted.success, trusted.error
    assert plaintext.reason is FailureReason.UNAVAILABLE  # a plaintext client on a TLS port


def test_tls_wrong_server_name(certs: Certs) -> None:
    with milvus_double(tls=certs.server_credentials()) as double:
        result = GrpcProber().run(
            target(
                uri=f"https://localhost:{double.port}",
                server_pem_path=str(certs.ca),
                server_name="milvus.other",
            )
        )
    assert result.reason is FailureReason.TLS


def test_tls_server_name_differs_from_the_host_dialled(tmp_path: Path) -> None:
    """A name the certificate holds (server_name) while the URI names another host, as a
    Service name in front of a certificate for the public name: the cycle succeeds."""
    certs = make_certs(tmp_path, ("milvus.prod.example.com",))  # not "localhost"
    with milvus_double(tls=certs.server_credentials()) as double:
        result = GrpcProber().run(
            target(
                uri=f"https://localhost:{double.port}",
                server_pem_path=str(certs.ca),
                server_name="milvus.prod.example.com",
            )
        )
    assert result.success, result.error


def test_tls_client_to_plaintext_port() -> None:
    with milvus_double() as double:
        result = GrpcProber().run(target(uri=f"https://127.0.0.1:{double.port}"))
    assert result.reason is FailureReason.TLS


def test_mutual_tls(certs: Certs) -> None:
    with milvus_double(tls=certs.server_credentials(mutual=True)) as double:
        uri = f"https://localhost:{double.port}"
        good = GrpcProber().run(
            target(
                uri=uri,
                ca_pem_path=str(certs.ca),
                client_pem_path=str(certs.client_cert),
                client_key_path=str(certs.client_key),
            )
        )
        no_client_cert = GrpcProber().run(target(uri=uri, ca_pem_path=str(certs.ca)))
    assert good.success, good.error
    assert no_client_cert.reason is FailureReason.TLS


def test_token_file_is_reread_when_it_changes(tmp_path: pytest.TempPathFactory) -> None:
    token_file = tmp_path / "token"  # type: ignore[operator]
    token_file.write_text("root:old\n")
    with milvus_double(Behaviour(token="root:new")) as double:
        t = target(uri=double.address, token_file=str(token_file))
        before = GrpcProber().run(t)
        token_file.write_text("root:new\n")
        after = GrpcProber().run(t)
    assert before.reason is FailureReason.UNAUTHENTICATED
    assert after.success


def test_shutdown_cancels_a_cycle_in_flight(silent: SilentServer) -> None:
    """Closing every channel (SIGTERM) ends a cycle stuck connecting within a fraction of a
    second, as cancelled: not as the timeout (5 s) it would otherwise have run into."""
    import threading
    import time

    prober = GrpcProber()
    results = []
    t = target(uri=f"127.0.0.1:{silent.port}", **{"probe.timeout": "5s", "probe.interval": "10s"})
    worker = threading.Thread(target=lambda: results.append(prober.run(t)))
    worker.start()
    wait_until(lambda: prober.ledger.open_count() == 1, 5, "the cycle to open its channel")
    began = time.monotonic()
    prober.ledger.close_all()
    worker.join(5)
    assert not worker.is_alive()
    assert time.monotonic() - began < 1.0  # the behaviour: "within a fraction of a second"
    assert prober.ledger.open_count() == 0
    (result,) = results
    assert not result.success
    assert (result.reason, result.failed_phase) == (FailureReason.ERROR, Phase.CONNECT)
    assert result.error == "cancelled: the probe is shutting down"


def test_connect_unimplemented_is_not_a_failure() -> None:
    """Milvus before 2.3 has no Connect RPC; the cycle still succeeds."""
    with milvus_double(connect=False) as double:
        result = GrpcProber().run(target(uri=double.address), InfoMode.FULL)
    assert result.success, result.error
    assert result.facts.connect_called and not result.facts.connect_supported
    assert result.version == "v2.5.0-double"
