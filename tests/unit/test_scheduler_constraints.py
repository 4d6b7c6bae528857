import pytest

from shoal.core.constraints import ConstraintError, node_matches, parse_constraint, parse_constraints, \
    validate_constraints
from test_reconcile_support import make_node


@pytest.mark.parametrize("expr,key,op,value", [
    ("node.role==manager", "node.role", "==", "manager"),
    ("  node.role  !=  worker ", "node.role", "!=", "worker"),
    ("Node.Hostname == db1", "node.hostname", "==", "db1"),
    ("node.labels.Storage == raid", "node.labels.Storage", "==", "raid"),
    ("engine.labels.os==linux", "engine.labels.os", "==", "linux"),
    ("node.platform.os == windows", "node.platform.os", "==", "windows"),
])
def test_parse(expr, key, op, value):
    c = parse_constraint(expr)
    assert (c.key, c.op, c.value) == (key, op, value)


@pytest.mark.parametrize("expr,fragment", [
    ("node.role", "expected one operator"),
    ("node.role = manager", "expected one operator"),
    ("node.role==a==b", "exactly one operator"),
    ("==manager", "key '' is invalid"),
    ("node.role==", "value '' is invalid"),
    ("node.colour==red", "unknown key"),
    ("node.labels.==x", "empty label name"),
    ("node.role==man'ager", "is invalid"),
])
def test_errors_name_the_expression(expr, fragment):
    with pytest.raises(ConstraintError) as e:
        parse_constraint(expr)
    assert repr(expr) in str(e.value) and fragment in str(e.value)


def test_validate_collects_all():
    errs = validate_constraints(["node.role==manager", "bogus", "node.x==1"])
    assert len(errs) == 2 and "'bogus'" in errs[0] and "'node.x==1'" in errs[1]
    assert validate_constraints(["node.labels.zone != a"]) == []


def test_matching():
    n = make_node("abc", hostname="DB1", role="manager", labels={"storage": "raid"},
                  engine_labels={"tier": "Gold"}, arch="aarch64")
    ok = lambda *e: node_matches(parse_constraints(e), n)  # noqa: E731
    assert ok("node.id==ABC", "node.hostname==db1", "node.role==Manager", "node.platform.os==Linux")
    assert ok("node.platform.arch==aarch64")
    assert ok("node.labels.storage==raid") and not ok("node.labels.storage==RAID")  # labels exact
    assert not ok("node.labels.Storage==raid")  # label names are case-sensitive
    assert ok("node.labels.missing!=x") and not ok("node.labels.missing==x")
    assert ok("engine.labels.tier==Gold") and not ok("engine.labels.tier==gold")
    assert not ok("node.role==manager", "node.hostname!=db1")
