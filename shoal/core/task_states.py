"""The whole task state machine, as tables.

A task's observed state only moves forward (Swarm's rule): a task is never re-run;
a new task replaces it in the same slot. Each transition belongs to one actor, so
the code that applies a state change can check who is asking.

  new --orchestrator--> pending --scheduler--> assigned --agent--> accepted
      --> preparing --> ready --> starting --> running --> complete | failed
  any non-terminal state --> shutdown | failed | rejected | orphaned | remove
  assigned … running --manager (its node is down)--> unknown --agent--> shutdown | failed | complete
                                                      unknown --manager (node removed)--> orphaned

`unknown` is Shoal's answer to Swarm's stale "Running" on a down node: the task has been
replaced elsewhere (its desired state is shutdown), but its container may still run on a
node the managers cannot reach. It stays unknown until that node reports back (and stops
it) or is removed.
"""
from __future__ import annotations

NEW = "new"
PENDING = "pending"
ASSIGNED = "assigned"
ACCEPTED = "accepted"
PREPARING = "preparing"
READY = "ready"
STARTING = "starting"
RUNNING = "running"
UNKNOWN = "unknown"
COMPLETE = "complete"
SHUTDOWN = "shutdown"
FAILED = "failed"
REJECTED = "rejected"
REMOVE = "remove"
ORPHANED = "orphaned"

ORDER = [NEW, PENDING, ASSIGNED, ACCEPTED, PREPARING, READY, STARTING, RUNNING, UNKNOWN,
         COMPLETE, SHUTDOWN, FAILED, REJECTED, REMOVE, ORPHANED]
RANK = {s: i for i, s in enumerate(ORDER)}

TERMINAL = frozenset({COMPLETE, SHUTDOWN, FAILED, REJECTED, REMOVE, ORPHANED})
ACTIVE = frozenset({NEW, PENDING, ASSIGNED, ACCEPTED, PREPARING, READY, STARTING, RUNNING, UNKNOWN})
# States in which a container may exist on a node.
ON_NODE = frozenset({ASSIGNED, ACCEPTED, PREPARING, READY, STARTING, RUNNING, UNKNOWN})
# On a node that reports: the node-down judgement moves these to unknown.
REPORTED = ON_NODE - {UNKNOWN}

ORCHESTRATOR = "orchestrator"
SCHEDULER = "scheduler"
AGENT = "agent"
MANAGER = "manager"  # node-down handling, removals

# Who may move a task from which state to which. Terminal states are sinks.
TRANSITIONS: dict[str, dict[str, frozenset[str]]] = {
    ORCHESTRATOR: {
        NEW: frozenset({PENDING, SHUTDOWN}),
        PENDING: frozenset({SHUTDOWN}),
    },
    SCHEDULER: {
        PENDING: frozenset({ASSIGNED}),
    },
    AGENT: {
        ASSIGNED: frozenset({ACCEPTED, PREPARING, READY, STARTING, RUNNING, COMPLETE, FAILED, REJECTED, SHUTDOWN}),
        ACCEPTED: frozenset({PREPARING, READY, STARTING, RUNNING, COMPLETE, FAILED, REJECTED, SHUTDOWN}),
        PREPARING: frozenset({READY, STARTING, RUNNING, COMPLETE, FAILED, REJECTED, SHUTDOWN}),
        READY: frozenset({STARTING, RUNNING, COMPLETE, FAILED, SHUTDOWN}),
        STARTING: frozenset({RUNNING, COMPLETE, FAILED, SHUTDOWN}),
        RUNNING: frozenset({COMPLETE, FAILED, SHUTDOWN}),
        UNKNOWN: frozenset({COMPLETE, FAILED, REJECTED, SHUTDOWN}),  # the node reports back
    },
    MANAGER: {
        **{s: frozenset({ORPHANED, SHUTDOWN, REMOVE}) for s in ACTIVE - ON_NODE},
        **{s: frozenset({UNKNOWN, ORPHANED}) for s in REPORTED},  # node down / removed
        UNKNOWN: frozenset({ORPHANED}),  # node removed
    },
}

# Desired states a task can be given (by the orchestrator / updater / manager).
DESIRED = frozenset({READY, RUNNING, SHUTDOWN, REMOVE, COMPLETE})


class InvalidTransition(ValueError):
    pass


def can_move(actor: str, old: str, new: str) -> bool:
    if old == new:
        return True
    return new in TRANSITIONS.get(actor, {}).get(old, frozenset())


# The moves some actor may make from each state: what the store lets any writer do.
ANY_ACTOR: dict[str, frozenset[str]] = {
    old: frozenset().union(*(t.get(old, frozenset()) for t in TRANSITIONS.values()))
    for old in {s for t in TRANSITIONS.values() for s in t}
}


def can_move_any(old: str, new: str) -> bool:
    """Is old -> new a move some actor may make? (The store asks on every task it writes.)"""
    return old == new or new in ANY_ACTOR.get(old, ())


def check_move(actor: str, old: str, new: str) -> None:
    if not can_move(actor, old, new):
        raise InvalidTransition(f"{actor} may not move a task from {old} to {new}")


def is_terminal(state: str) -> bool:
    return state in TERMINAL


def is_active(state: str) -> bool:
    return state in ACTIVE


def title(state: str) -> str:
    """How `service ps` shows a state: 'Running', 'Pending'…"""
    return state.capitalize()
