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


def test_the_first_heartbeat_goes_before_the_agents_other_calls_to_managers(tmp_path):
    """Heartbeats start before the containers are adopted; assignments, reports, logs and
    actions start once a manager answered one (a joining node's first beat is not queued
    behind four new TLS connections); containers are watched and the certificate renewed
    from the start, whatever the managers do."""
    import asyncio

    order: list[str] = []

    async def main() -> None:
        agent = Agent("n1", _Client(), configs_dir=str(tmp_path / "c"), secrets_dir=str(tmp_path / "s"))

        def loop(name: str):
            async def run(*_a) -> None:
                order.append(name)
                await asyncio.sleep(3600)
            return run

        async def heartbeats() -> None:
            order.append("heartbeat")
            await asyncio.sleep(0.05)
            order.append("answered")
            agent.heartbeat.registered.set()
            await asyncio.sleep(3600)

        async def adopt() -> list:
            order.append("adopt")
            return []

        agent.heartbeat.run = heartbeats
        agent.executor.list_managed = adopt
        agent.runner.event_loop = loop("events")
        agent._resync_loop = loop("resync")
        agent.heartbeat.attached.watch = loop("attached")
        agent.certs = type("Certs", (), {"run": staticmethod(loop("certs"))})()
        for name in ("_assignment_loop", "_logs_loop", "_actions_loop"):
            setattr(agent, name, loop(name))
        agent.reporter.run = loop("reports")
        runner = asyncio.create_task(agent.run())
        await asyncio.sleep(0.2)
        agent._stop.set()
        for t in agent._bg:
            t.cancel()
        await asyncio.gather(runner, *agent._bg, return_exceptions=True)

    asyncio.run(main())
    first_call = min(order.index(n) for n in ("_assignment_loop", "reports", "_logs_loop", "_actions_loop"))
    assert order[0] == "heartbeat" and order.index("answered") < first_call
    assert max(order.index(n) for n in ("events", "resync", "attached", "certs")) < order.index("answered")
    assert {"_assignment_loop", "reports", "_logs_loop", "_actions_loop"} <= set(order)


def test_the_first_description_is_the_engine_answer_asked_during_the_join(tmp_path):
    """The daemon asks the engine's `/info` while the join obtains the certificate; the
    first heartbeat's description uses that answer instead of asking again, and asks the
    engine itself when that answer failed (and for every later beat)."""
    import asyncio

    from shoal.agent.engine import EngineError

    async def main() -> list[str]:
        asked: list[str] = []

        async def info() -> dict:
            asked.append("info")
            return {"Name": "lab9", "NCPU": 2, "MemTotal": 1 << 30, "ServerVersion": "20.10.24"}

        async def early(answer: dict) -> dict:
            return answer

        async def failed() -> dict:
            raise EngineError(0, "engine restarting")

        agent = Agent("n1", _Client(), configs_dir=str(tmp_path / "c"), secrets_dir=str(tmp_path / "s"),
                      engine_info=asyncio.ensure_future(early({"Name": "lab8", "NCPU": 4, "MemTotal": 2 << 30})))
        agent.engine.info = info
        first = await agent.heartbeat.describe()
        second = await agent.heartbeat.describe()
        assert (first["hostname"], first["nano_cpus"]) == ("lab8", 4_000_000_000) and asked == ["info"]
        assert second["hostname"] == "lab9"

        other = Agent("n2", _Client(), configs_dir=str(tmp_path / "c2"), secrets_dir=str(tmp_path / "s2"),
                      engine_info=asyncio.ensure_future(failed()))
        other.engine.info = info
        assert (await other.heartbeat.describe())["hostname"] == "lab9"
        await agent.engine.close()
        await other.engine.close()
        return asked

    assert asyncio.run(main()) == ["info", "info"]
