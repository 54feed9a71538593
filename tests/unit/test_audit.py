"""The hash-chained audit trail catches an edited, a removed and a reordered line."""

import json


def trail(mu, tmp_path, n=5):
    path = str(tmp_path / "audit.jsonl")
    for i in range(n):
        mu.audit.append(path, "step", index=i)
    return path


def lines(path):
    with open(path) as fh:
        return fh.read().splitlines()


def write(path, rows):
    with open(path, "w") as fh:
        fh.write("\n".join(rows) + "\n")


def test_an_untouched_trail_verifies(mu, tmp_path):
    path = trail(mu, tmp_path)
    assert mu.audit.verify(path) == {"ok": True, "entries": 5, "broken_at": None, "problem": "", "anchored": False}


def test_an_edited_line_is_named(mu, tmp_path):
    path = trail(mu, tmp_path)
    rows = lines(path)
    entry = json.loads(rows[2])
    entry["index"] = 99
    rows[2] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    write(path, rows)
    result = mu.audit.verify(path)
    assert not result["ok"] and result["broken_at"] == 3 and "edited" in result["problem"]


def test_a_removed_line_is_found(mu, tmp_path):
    path = trail(mu, tmp_path)
    rows = lines(path)
    del rows[1]
    write(path, rows)
    assert mu.audit.verify(path)["broken_at"] == 2


def test_reordered_lines_are_found(mu, tmp_path):
    path = trail(mu, tmp_path)
    rows = lines(path)
    rows[1], rows[3] = rows[3], rows[1]
    write(path, rows)
    assert mu.audit.verify(path)["broken_at"] == 2


def test_a_removed_last_line_is_found_with_the_recorded_head(mu, tmp_path):
    path = trail(mu, tmp_path)
    head = dict(zip(("hash", "seq"), mu.audit.head(path), strict=True))
    write(path, lines(path)[:-1])
    assert mu.audit.verify(path)["ok"]  # undetectable from the file alone ...
    assert not mu.audit.verify(path, head)["ok"]  # ... but not against the head the run kept


# ------------------------------------------------------------------ the anchor outside the run directory
def keyed_trail(mu, tmp_path, n=5):
    """A trail at <home>/runs/<run id>/audit.jsonl with the controller key <home>/audit.key."""
    run_dir = tmp_path / "home" / "runs" / "20261204T031500-0001"
    run_dir.mkdir(parents=True)
    mu.audit.ensure_key(str(tmp_path / "home"))
    path = str(run_dir / "audit.jsonl")
    for i in range(n):
        mu.audit.append(path, "step", index=i)
    return path


def rewrite(mu, path, change, keep_macs=True):
    """Rewrite the trail as someone without the key would: change entries, recompute every hash."""
    prev, out = mu.audit.GENESIS, []
    for row in lines(path):
        entry = json.loads(row)
        change(entry)
        entry["prev"] = prev
        if not keep_macs:
            entry.pop("mac", None)
        entry["hash"] = mu.audit.entry_hash(entry)
        prev = entry["hash"]
        out.append(json.dumps(entry, sort_keys=True, separators=(",", ":")))
    write(path, out)


def test_a_keyed_trail_verifies_and_is_anchored_outside_the_run_directory(mu, tmp_path):
    path = keyed_trail(mu, tmp_path)
    result = mu.audit.verify(path)
    assert result["ok"] and result["anchored"], result
    assert oct((tmp_path / "home" / "audit.key").stat().st_mode & 0o777) == "0o600"
    anchor = json.loads((tmp_path / "home" / "audit-anchors" / "20261204T031500-0001.json").read_text())
    assert anchor["seq"] == 5 and anchor["hash"] == json.loads(lines(path)[-1])["hash"]


def test_a_trail_rewritten_with_recomputed_hashes_fails(mu, tmp_path):
    path = keyed_trail(mu, tmp_path)
    rewrite(mu, path, lambda e: e.update(index=e["index"] + 10))
    assert mu.audit._verify_chain(path)["ok"]  # the chain alone is fooled
    result = mu.audit.verify(path)
    assert not result["ok"] and result["broken_at"] == 1
    assert "does not carry the controller key's MAC" in result["problem"]


def test_a_trail_stripped_of_its_macs_or_cut_short_fails(mu, tmp_path):
    path = keyed_trail(mu, tmp_path)
    rewrite(mu, path, lambda e: None, keep_macs=False)
    assert not mu.audit.verify(path)["ok"]
    path = keyed_trail(mu, tmp_path / "b")
    write(path, lines(path)[:3])
    result = mu.audit.verify(path)
    assert not result["ok"] and "has 3 entries but its anchor recorded 5" in result["problem"]
    anchor = tmp_path / "b" / "home" / "audit-anchors" / "20261204T031500-0001.json"
    anchor.unlink()
    assert "its anchor" in mu.audit.verify(path)["problem"]


def _append_many(mu, path, who, n):
    for i in range(n):
        mu.audit.append(path, "step", who=who, index=i)


def test_two_processes_appending_at_once_keep_one_chain_and_every_entry(mu, tmp_path):
    """A trigger's duplicate lands in a run's trail while that run asks for approval: two processes append
    to one keyed trail at the same time, and the chain, its anchor and every entry survive."""
    import multiprocessing

    path = keyed_trail(mu, tmp_path)
    fork = multiprocessing.get_context("fork")
    procs = [fork.Process(target=_append_many, args=(mu, path, who, 150)) for who in ("a", "b")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    result = mu.audit.verify(path)
    assert result["ok"] and result["anchored"], result
    assert result["entries"] == 5 + 2 * 150
    entries = [json.loads(line) for line in lines(path)]
    assert [e["seq"] for e in entries] == list(range(1, 306))
    assert sorted((e.get("who"), e["index"]) for e in entries[5:]) == [(w, i) for w in "ab" for i in range(150)]
