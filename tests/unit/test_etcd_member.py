"""The etcd members the managers run themselves (shoal/manager/etcd_member.py): the member's
command line, and the changes of members a join, the leader and a demotion make, against a
real etcd member (tests/etcd_server.py)."""
from __future__ import annotations

import pytest

from etcd_server import EtcdServer
from shoal.manager.etcd_member import Members, command, new_member_config, store_url
from shoal.paths import Layout
from shoal.store.etcd import EtcdError


def test_a_member_listens_for_clients_on_loopback_only_and_speaks_mutual_tls():
    layout = Layout("/var/lib/shoal")
    cfg = new_member_config("n1", "10.0.0.5")
    cmd = command("/usr/bin/etcd", layout, cfg)
    opt = {cmd[i]: cmd[i + 1] for i in range(1, len(cmd) - 1) if cmd[i].startswith("--") and not cmd[i + 1].startswith("--")}
    assert opt["--listen-client-urls"] == "https://127.0.0.1:2379"
    assert opt["--listen-peer-urls"] == "https://10.0.0.5:2380"
    assert opt["--initial-cluster"] == "n1=https://10.0.0.5:2380" and opt["--initial-cluster-state"] == "new"
    assert opt["--trusted-ca-file"] == opt["--peer-trusted-ca-file"] == layout.etcd_ca_cert
    assert {"--client-cert-auth", "--peer-client-cert-auth", "--pre-vote"} <= set(cmd)
    assert "--force-new-cluster" not in cmd
    assert "--force-new-cluster" in command("/usr/bin/etcd", layout, {**cfg, "force_new_cluster": True})
    assert store_url(layout, cfg).startswith("etcds://127.0.0.1:2379?ca=")


def test_a_joining_member_is_listed_in_its_initial_cluster():
    cfg = new_member_config("n2", "10.0.0.6", "n1=https://10.0.0.5:2380,n2=https://10.0.0.6:2380")
    assert cfg["state"] == "existing"


@pytest.fixture
def etcd(tmp_path):
    server = EtcdServer(tmp_path).start()
    yield server
    server.stop()


def test_a_joining_manager_is_added_as_a_learner_and_named_in_its_initial_cluster(etcd):
    members = Members(etcd.url)
    got = members.add_learner("n2", "http://127.0.0.1:1")
    assert set(got["initial_cluster"].split(",")) == {f"test=http://127.0.0.1:{etcd.peer_port}",
                                                      "n2=http://127.0.0.1:1"}
    listing = members.listing()
    assert {(m["name"], m["voting"]) for m in listing} == {("test", True), ("", False)}
    # a learner that never started is not promoted (and takes no part in the quorum)
    assert members.promote_learners() == []
    # the same address joining again (a join that failed after the member was added): the
    # unstarted learner is replaced, not refused
    again = members.add_learner("n2", "http://127.0.0.1:1")
    assert again["member_id"] != got["member_id"] and len(members.listing()) == 2
    members.close()


def test_an_address_a_started_member_uses_is_refused_with_the_way_out(etcd):
    members = Members(etcd.url)
    with pytest.raises(ValueError, match="already uses .*node demote"):
        members.add_learner("n9", f"http://127.0.0.1:{etcd.peer_port}")
    members.close()


def test_removing_a_member_no_manager_runs_changes_nothing(etcd):
    members = Members(etcd.url)
    members.add_learner("n2", "http://127.0.0.1:1")
    assert members.remove("nobody", patience=5) is False
    assert len(members.listing()) == 2
    members.close()


def test_an_etcd_that_does_not_answer_is_an_etcd_error():
    members = Members("etcd://127.0.0.1:1")
    with pytest.raises(EtcdError):
        members.listing()


def test_a_member_etcd_removed_is_not_started_again(tmp_path):
    """A removed member exits 0 saying so (and would at every start): the keeper marks it
    removed and leaves it; a start of it says what to do."""
    import asyncio
    import subprocess

    from shoal.manager.etcd_member import REMOVED_MARK, EtcdMember
    layout = Layout(str(tmp_path))
    (tmp_path / "etcd").mkdir()
    m = EtcdMember(layout, new_member_config("n1", "10.0.0.5"), save=lambda cfg: None)
    with open(m.log_path, "ab") as out:
        m._log_from = out.tell()
        m.proc = subprocess.Popen(["sh", "-c", f"echo '{{\"error\":\"the member has been {REMOVED_MARK.decode()}\"}}'"],
                                  stdout=out)
    m.proc.wait()
    asyncio.run(asyncio.wait_for(m._keep(), 5))
    assert m.removed and m.proc.args[0] == "sh"  # not spawned again
