"""bench/workers.py runs (tiny): a main process and a client worker behind nginx, ours and
Synapse's, every message delivered to the other members' /sync, CPU counted for every
process; and federation ingest from two origins over two inbound federation workers, every
PDU stored. Numbers are not checked: that is the benchmark's business
(docs/performance.md)."""

from __future__ import annotations

import pytest

from bench import workers
from tests.conftest import SKIP_POSTGRES

pytestmark = pytest.mark.skipif(SKIP_POSTGRES, reason="workers need PostgreSQL")

TINY = ["--processes", "2", "--users", "3", "--rooms", "1", "--messages", "2", "--warmup", "1"]


@pytest.mark.parametrize("server", ["gateway", "synapse"])
async def test_the_client_bench_runs_through_nginx_and_counts_every_process(capsys, server):
    client, federation = await workers.main([*TINY, "--measures", "client", "--servers", server])
    assert federation == {}
    (run,) = client[(server, 2)]
    assert run.result.messages == 6
    assert run.result.expected_deliveries == 12 and len(run.result.delivery_ms) == 12
    assert set(run.cpu.per_process_s) == {"main", "client1"}
    assert run.cpu.per_process_s["main"] > 0 and run.cpu.per_process_s["client1"] > 0  # syncs went there
    assert run.cpu.postgres_s > 0
    out = capsys.readouterr().out
    assert f"| {server} | 2 | " in out and "(main " in out and "client1 " in out


async def test_the_federation_bench_spreads_transactions_over_the_workers(capsys):
    """Two origins, two rooms: each worker gets transactions (nginx round-robin), and the
    bench checked that every room ends with its origin's last PDU."""
    _, federation = await workers.main(["--measures", "federation", "--federation-workers", "2", "--origins", "2",
                                        "--pdus", "100", "--federation-warmup", "1"])
    (run,) = federation[2]
    assert run.pdus == 200
    assert set(run.cpu.per_process_s) == {"main", "federation1", "federation2"}
    assert run.cpu.per_process_s["federation1"] > 0 and run.cpu.per_process_s["federation2"] > 0
    assert "| 2 federation workers (+ main) | " in capsys.readouterr().out


async def test_the_commit_probe_runs(capsys):
    client, federation = await workers.main(["--measures", "commit", "--commits", "5"])
    assert client == {} and federation == {}
    assert "stream position + row + commit" in capsys.readouterr().out
