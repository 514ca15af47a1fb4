"""bench/workers.py runs (tiny): a main process and a client worker behind nginx, every
message delivered to the other members' /sync, CPU counted for both processes. Numbers
are not checked: that is the benchmark's business (docs/performance.md)."""

from __future__ import annotations

import pytest

from bench import workers
from tests.conftest import SKIP_POSTGRES

pytestmark = pytest.mark.skipif(SKIP_POSTGRES, reason="workers need PostgreSQL")


async def test_the_bench_runs_through_nginx_and_counts_every_process(capsys):
    runs = await workers.main(["--processes", "2", "--users", "3", "--rooms", "1", "--messages", "2",
                               "--warmup", "1"])
    (run,) = runs[2]
    assert run.result.messages == 6
    assert run.result.expected_deliveries == 12 and len(run.result.delivery_ms) == 12
    assert set(run.per_process_cpu_s) == {"main", "client1"}
    assert run.per_process_cpu_s["main"] > 0 and run.per_process_cpu_s["client1"] > 0  # syncs went there
    out = capsys.readouterr().out
    assert "| 2 | " in out and "(main " in out and "client1 " in out
