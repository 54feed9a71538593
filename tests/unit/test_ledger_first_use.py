"""Two controllers (or two EDA triggers) opening a new SQLite ledger at the same moment both get it."""

from __future__ import annotations

import multiprocessing

from release_rollback.ledger import Ledger


def _open(url: str) -> None:
    Ledger.connect(url).engine.dispose()


def test_processes_opening_a_new_sqlite_ledger_together_all_succeed(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    failed = 0
    for i in range(6):
        url = f"sqlite:///{tmp_path / f'ledger{i}.db'}"
        procs = [ctx.Process(target=_open, args=(url,)) for _ in range(3)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=120)
        failed += sum(proc.exitcode != 0 for proc in procs)
        assert Ledger.connect(url).run_ids() == []
    assert failed == 0, f"{failed} of 18 processes failed to open a new ledger"
