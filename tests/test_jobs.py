"""Job specs: validation at the edge and the stored JSON form."""

from __future__ import annotations

import json

import pytest

from etcdcron.errors import InvalidJobName, InvalidSpec
from etcdcron.jobs import JobSpec, check_name, make_spec, parse_args


@pytest.mark.parametrize("name", ["a", "0", "retention", "a.b_c-d", "a" * 63])
def test_good_names(name):
    """Names matching [a-z0-9][a-z0-9._-]{0,62} are accepted."""
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "-a", ".a", "a b", "a/b", "a" * 64, "é"])
def test_bad_names(name):
    """Anything else is refused with InvalidJobName."""
    with pytest.raises(InvalidJobName):
        check_name(name)


def test_spec_round_trips_through_json():
    """A spec survives to_json/from_json unchanged; unknown stored fields are ignored."""
    spec = make_spec("x", "*/5 * * * * *", shell="echo hi", tz="Asia/Kathmandu", level=1, timeout=3.5,
                     args={"a": "1"}, on_node_loss="skip")
    assert JobSpec.from_json(spec.to_json()) == spec
    assert JobSpec.from_json(spec.to_json()[:-1] + b',"future_field":1}') == spec


def test_builtin_name_defaults_to_job_name():
    """`add SCHEDULE BUILTIN` names the job after the builtin."""
    spec = make_spec(None, "0 * * * *", builtin="noop")
    assert (spec.name, spec.kind, spec.target) == ("noop", "builtin", "noop")


@pytest.mark.parametrize("kw", [{"shell": "x", "http": "http://h"}, {}, {"builtin": "nope"}])
def test_exactly_one_known_target(kw):
    """A job needs exactly one target, and a builtin must be installed."""
    with pytest.raises(InvalidSpec):
        make_spec("x", "@hourly", **kw)


def test_args_parse():
    """--arg KEY=VALUE pairs parse; a value may contain '='; a pair without '=' is refused."""
    assert parse_args(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(InvalidSpec):
        parse_args(["nokey"])


def test_stored_args_that_are_not_strings_are_read_back_as_they_were():
    """Equal small args maps are shared between specs read from etcd, but only maps of strings:
    1, 1.0 and True are equal dict keys and must not be read back as one another."""
    base = json.loads(make_spec("a", "* * * * *", shell="true").to_json())
    first = JobSpec.from_json(json.dumps({**base, "args": {"n": 1}}))
    second = JobSpec.from_json(json.dumps({**base, "args": {"n": True}}))
    assert first.args == {"n": 1} and second.args["n"] is True
