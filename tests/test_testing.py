"""etcdcron.testing's pure parts: the ledger reader (both encodings) and the checker's window helper."""

from __future__ import annotations

import json

import pytest

from etcdcron.testing import Line, parse_line, read_ledger, slots


def test_shell_and_builtin_lines_read_as_one_type(tmp_path):
    """The shell job's text lines and the builtin ledger's JSON lines both come back as Line."""
    path = tmp_path / "ledger"
    builtin = {"job": "b", "slot": 11, "node": "n2", "fence": 7, "attempt": 2, "start": 11.25}
    path.write_text(f"start a 10 n1 5 1 10.5\n{json.dumps(builtin)}\nend a 10 n1 5 1 10.75\n")
    assert read_ledger(path) == [Line("start", "a", 10, "n1", 5, 1, 10.5), Line("start", "b", 11, "n2", 7, 2, 11.25),
                                 Line("end", "a", 10, "n1", 5, 1, 10.75)]


def test_a_line_still_being_written_is_left_out_and_a_bad_one_raises(tmp_path):
    """A last line without its newline is skipped; a complete line that does not parse is an error."""
    path = tmp_path / "ledger"
    path.write_text('start a 10 n1 5 1 10.5\n{"job": "b", "sl')
    assert [ln.job for ln in read_ledger(path)] == ["a"]
    path.write_text("start a 10 n1\nstart a 11 n1 6 1 11.5\n")
    with pytest.raises(ValueError):
        read_ledger(path)
    assert read_ledger(tmp_path / "absent") == []


def test_builtin_line_without_attempt_is_a_first_attempt():
    """A ledger line from an older builtin (no attempt) reads as attempt 1."""
    line = parse_line('{"job": "b", "slot": 3, "node": "n1", "fence": 1, "start": 3.5}')
    assert (line.what, line.attempt, line.at) == ("start", 1, 3.5)


def test_slots_of_a_job_every_few_seconds():
    """slots() lists the instants of an every-N-seconds job inside a window, ends included."""
    assert list(slots(10, 20, 5)) == [10, 15, 20]
    assert list(slots(11, 20, 5)) == [15, 20]
