"""Keys are built and parsed in one place: every builder's key parses back to what built it."""

from __future__ import annotations

from etcdcron.keys import Keys, Kind, Parsed


def test_every_key_parses_back_to_what_built_it():
    """parse() inverts each builder, under any prefix, and leaves unknown shapes as OTHER."""
    for keys in (Keys("/etcdcron"), Keys("a/b"), Keys("")):
        assert keys.parse(keys.job("j.1")) == Parsed(Kind.JOB, job="j.1")
        assert keys.parse(keys.node("n-1")) == Parsed(Kind.NODE, node="n-1")
        assert keys.parse(keys.candidate(0x1F)).kind is Kind.CANDIDATE
        assert keys.parse(keys.claim("j", 60)) == Parsed(Kind.CLAIM, job="j", slot=60)
        assert keys.parse(keys.running("j", 1_800_000_000)).firing == ("j", 1_800_000_000)
        assert keys.parse(keys.runs("j")) == Parsed(Kind.RUNS, job="j")
        assert keys.parse(keys.degrade) == Parsed(Kind.DEGRADE)
        assert keys.parse(keys.kill("j")) == Parsed(Kind.KILL, job="j")
        assert keys.parse(keys.trigger("j")) == Parsed(Kind.TRIGGER, job="j")
        assert keys.parse(keys.drain("n1")) == Parsed(Kind.DRAIN, node="n1")
        assert keys.parse(keys.backfill("j", "ab12")) == Parsed(Kind.BACKFILL, job="j", ident="ab12")
        assert keys.parse(keys.applied("j")) == Parsed(Kind.APPLIED, job="j")
        for other in (keys.backfilled("j"), keys.missed_watermark, keys.collected("j"), keys.claims("j") + "x/y",
                      keys.prefix + "/claims/j/notanumber"):
            assert keys.parse(other).kind is Kind.OTHER, other
