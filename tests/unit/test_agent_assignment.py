"""One bad task in an assignment is rejected alone, never the whole assignment (issue #12)."""
from __future__ import annotations

from shoal.agent.agent import Agent
from shoal.agent.client import ManagerList
from shoal.model.objects import Task, TaskStatus
from shoal.model.specs import ServiceSpec


class _Client:
    managers = ManagerList(["127.0.0.1:1"])


def test_an_invalid_task_is_rejected_alone(tmp_path):
    agent = Agent("n1", _Client(), configs_dir=str(tmp_path / "c"), secrets_dir=str(tmp_path / "s"))
    spec = ServiceSpec(name="web", container={"image": "busybox"})
    good = Task(id="good", service_id="s", service_name="web", slot=1, node_id="n1", spec=spec,
                status=TaskStatus(state="assigned")).model_dump(mode="json")
    bad = {**good, "id": "bad", "spec": {**good["spec"], "container": {"image": "busybox",
                                                                       "stop_grace_period": None}}}
    worse = {"id": 7}
    tasks, rejected = agent._tasks([good, bad, worse, "nonsense"])
    assert list(tasks) == ["good"] and rejected == {"bad"}
    report = agent.reporter.outbox["bad"]
    assert report["state"] == "rejected" and "stop_grace_period" in report["err"]
