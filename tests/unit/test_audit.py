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
    assert mu.audit.verify(path) == {"ok": True, "entries": 5, "broken_at": None, "problem": ""}


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
