"""Restart policy: may a slot whose task ended be given a replacement, and from when?

Swarm's rules, made level-triggered (deciding again later gives the same answer):
- condition ``any``: always (jobs: unless the task completed); ``on-failure``: unless the task
  completed (exit 0) — failed, rejected and unexpectedly shut down tasks are restarted;
  ``none``: never.
- ``max_attempts`` (0 = unlimited): without a window, the slot's restart count so far is the
  ended task's ``attempt``; with a window, restarts are the slot's tasks with attempt > 0
  created within ``window`` seconds before the task ended — measured from the end time, not
  from now, so a slot that ran out of attempts stays stopped.
- The replacement starts no earlier than end time + ``delay``.
"""
from __future__ import annotations

from typing import Sequence

from shoal.core.task_states import COMPLETE
from shoal.model.objects import Task
from shoal.model.specs import RestartPolicy

HISTORY_LIMIT = 5  # tasks kept per slot, the running one included (Swarm's default)


def history_limit(policy: RestartPolicy) -> int:
    """Tasks to keep per slot. With a restart window the count of recent restarts is read from
    the slot's history, so a window with max_attempts >= 5 keeps max_attempts + 1 tasks."""
    if policy.window > 0 and policy.max_attempts > 0:
        return max(HISTORY_LIMIT, policy.max_attempts + 1)
    return HISTORY_LIMIT


def ended_at(task: Task, now: float) -> float:
    return task.status.timestamp or now


def should_restart(task: Task, slot_history: Sequence[Task], now: float, job: bool = False) -> bool:
    """`task` (terminal, still desired running) ended on its own; `slot_history` is its slot's tasks."""
    policy = task.spec.restart_policy
    completed = task.status.state == COMPLETE
    if policy.condition == "none":
        return False
    if completed and (policy.condition == "on-failure" or job):
        return False
    if policy.max_attempts <= 0:
        return True
    if policy.window <= 0:
        return task.attempt < policy.max_attempts
    end = ended_at(task, now)
    recent = sum(1 for t in slot_history
                 if t.attempt > 0 and end - policy.window < t.created_at <= end)
    return recent < policy.max_attempts


def restart_not_before(task: Task, now: float) -> float:
    return ended_at(task, now) + task.spec.restart_policy.delay
