"""`node promote|demote` as the manager decides them (shoal/manager/membership.py): who may
become a worker without the managers' etcd losing its quorum, and what the store says then."""
from __future__ import annotations

import pytest

from shoal.manager.errors import ApiError, Conflict
from shoal.manager.membership import Membership
from shoal.model.objects import Node, NodeDescription
from shoal.store.sqlite import SqliteStore


class Members:
    """The managers' etcd members, as far as membership uses them."""

    def __init__(self):
        self.removed: list[str] = []

    def remove(self, name: str) -> bool:
        self.removed.append(name)
        return True


@pytest.fixture
def st(tmp_path):
    s = SqliteStore(str(tmp_path / "s.db"))
    yield s
    s.close()


def nodes(st, **roles_states: str) -> None:
    for name, rs in roles_states.items():
        role, state = rs.split("/")
        st.put(Node(id=name, role=role, state=state, description=NodeDescription(hostname=name)))


def test_promote_makes_a_manager_and_says_when_it_already_is_one(st):
    nodes(st, m1="manager/ready", w1="worker/ready")
    m = Membership(st, None, None, "c", "etcd", etcd_members=Members())
    assert m.promote(st.get(Node, "w1")) is True
    assert st.get(Node, "w1").role == "manager"
    assert m.promote(st.get(Node, "w1")) is False


def test_promote_needs_a_store_every_manager_reaches(st):
    nodes(st, m1="manager/ready", w1="worker/ready")
    with pytest.raises(ApiError, match="etcd"):
        Membership(st, None, None, "c", "sqlite").promote(st.get(Node, "w1"))
    assert st.get(Node, "w1").role == "worker"


def test_demote_makes_a_worker_that_leads_no_more(st):
    nodes(st, m1="manager/ready", m2="manager/ready", m3="manager/ready")
    st.put(st.get(Node, "m2").model_copy(update={"leader": True}))
    m = Membership(st, None, None, "c", "etcd", etcd_members=Members())
    assert m.check_demote(st.get(Node, "m2")) is True
    m.demote(st.get(Node, "m2"))
    n = st.get(Node, "m2")
    assert (n.role, n.leader) == ("worker", False)


def test_the_last_manager_is_never_demoted(st):
    nodes(st, m1="manager/ready", w1="worker/ready")
    with pytest.raises(Conflict, match="last manager"):
        Membership(st, None, None, "c", "etcd", etcd_members=Members()).check_demote(st.get(Node, "m1"))


def test_a_demotion_that_would_lose_the_quorum_is_refused(st):
    """Three managers, one down: demoting a healthy one leaves two members, one reachable,
    against a quorum of two. Demoting the down one leaves two reachable of two: allowed."""
    nodes(st, m1="manager/ready", m2="manager/ready", m3="manager/down")
    m = Membership(st, None, None, "c", "etcd", etcd_members=Members())
    with pytest.raises(Conflict, match=r"would leave 2 managers of which 1 are reachable.*\(2 needed\)"):
        m.check_demote(st.get(Node, "m2"))
    assert m.check_demote(st.get(Node, "m3")) is True
    # with an etcd of the user's, the quorum is etcd's: only the last manager is kept
    assert Membership(st, None, None, "c", "etcd://x:2379").check_demote(st.get(Node, "m2")) is True


def test_demote_of_a_worker_changes_nothing(st):
    nodes(st, m1="manager/ready", w1="worker/ready")
    assert Membership(st, None, None, "c", "etcd", etcd_members=Members()).check_demote(st.get(Node, "w1")) is False


def test_a_lost_manager_is_removed_only_with_force_and_its_member_goes(st):
    nodes(st, m1="manager/ready", m2="manager/ready", m3="manager/down")
    members = Members()
    m = Membership(st, None, None, "c", "etcd", etcd_members=members)
    with pytest.raises(Conflict, match="cannot remove itself"):
        m.remove(st.get(Node, "m1"), True, "m1")
    with pytest.raises(Conflict, match="is a manager"):
        m.remove(st.get(Node, "m2"), True, "m1")  # a reachable manager: demote it first
    with pytest.raises(Conflict, match="is a manager"):
        m.remove(st.get(Node, "m3"), False, "m1")
    m.remove(st.get(Node, "m3"), True, "m1")
    assert members.removed == ["m3"] and st.get(Node, "m3") is None


def test_a_users_change_that_lost_a_race_is_made_again_not_a_deposed_leaders(st):
    """The API makes a user's change again when another manager's won the race (Conflict):
    handlers compute their writes from the view. A deposed leader's refusal is not retried."""
    import asyncio
    from types import SimpleNamespace

    from shoal.manager.http.app import ManagerApp
    from shoal.store import Conflict as StoreConflict, Deposed
    app = ManagerApp.__new__(ManagerApp)
    app.c = SimpleNamespace(store=st)
    calls = []

    async def lost_twice(request):
        calls.append(1)
        if len(calls) < 3:
            st.put(Node(id=f"x{len(calls)}"))  # the other manager's change reaches the view
            raise StoreConflict("another manager changed it at the same moment")
        return "made"
    assert asyncio.run(app._retrying(lost_twice, SimpleNamespace(method="POST", path="/v1/services"))) == "made"
    assert len(calls) == 3

    async def deposed(request):
        calls.append(1)
        raise Deposed("no longer the leader")
    calls.clear()
    with pytest.raises(Deposed):
        asyncio.run(app._retrying(deposed, SimpleNamespace(method="POST", path="/v1/services")))
    assert len(calls) == 1
