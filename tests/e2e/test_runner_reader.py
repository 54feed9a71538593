"""The driver's reading of ansible-runner's output: what it keeps in memory is bounded by one event,
whatever the job prints (a 100,000-event stage must not hold its whole output in the driver)."""

from __future__ import annotations

import json
import threading

import pexpect
from ansible_runner import runner as runner_module
from release_rollback.runner import run_stage

PLAYBOOK = """---
- name: Print a lot
  hosts: localhost
  gather_facts: false
  tasks:
""" + "".join(
    f"""    - name: "Lines {n}"
      ansible.builtin.debug:
        msg: "{{{{ item }}}} {"x" * 400}"
      loop: "{{{{ range(100) | list }}}}"
"""
    for n in range(20)
)


def test_the_reader_keeps_about_one_event_of_output_not_the_whole_job(tmp_path, monkeypatch):
    seen = {"kept": 0, "read": 0}

    class MeasuredSpawn(pexpect.spawn):
        """ansible-runner's pexpect child, measuring what pexpect holds between two matches."""

        def read_nonblocking(self, size=1, timeout=-1):
            data = super().read_nonblocking(size, timeout)
            seen["read"] += len(data)
            return data

        def expect(self, *args, **kwargs):
            try:
                return super().expect(*args, **kwargs)
            finally:
                seen["kept"] = max(seen["kept"], self._before.tell())

    monkeypatch.setattr(runner_module.pexpect, "spawn", MeasuredSpawn)
    book = tmp_path / "print.yml"
    book.write_text(PLAYBOOK)
    run = run_stage("print", "localhost,", {}, tmp_path / "events.jsonl", threading.Event(), playbook=book)
    assert run.status == "successful", run.last_error
    assert run.events > 2000
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == run.events
    # The job printed over a megabyte; pexpect held a few kilobytes at a time.
    assert seen["read"] > 1_000_000, seen
    assert seen["kept"] < 64 * 1024, seen
    # The events on disk are whole (the marker that bounds the buffer does not cut them).
    items = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "runner_item_on_ok" for e in items) == 2000


def test_the_last_line_of_a_long_output_is_read_from_its_tail(tmp_path):
    from release_rollback.runner import _last_stdout_line

    stdout = tmp_path / "artifacts" / "ident" / "stdout"
    stdout.parent.mkdir(parents=True)
    stdout.write_text("ok: [web1]\n" * 200_000 + "fatal: [web2]: UNREACHABLE! => the end\n\n")
    assert _last_stdout_line(tmp_path, tail=4096) == "fatal: [web2]: UNREACHABLE! => the end"
    stdout.write_text("only line\n")
    assert _last_stdout_line(tmp_path) == "only line"
