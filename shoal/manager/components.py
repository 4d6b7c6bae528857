"""The manager's components, as the API's route groups see them (wired by `server.py`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from shoal.manager.actions import ActionHub
from shoal.manager.cluster import Cluster
from shoal.manager.dashboard.sessions import Sessions
from shoal.manager.dispatcher import Dispatcher
from shoal.manager.events import EventLog
from shoal.manager.heartbeats import Heartbeats
from shoal.manager.keyring import Keyring
from shoal.manager.logs import LogHub
from shoal.manager.membership import Membership
from shoal.manager.volumes import VolumeRegistry
from shoal.store import Store


@dataclass
class Components:
    store: Store
    keyring: Keyring
    cluster: Cluster
    membership: Membership
    heartbeats: Heartbeats
    dispatcher: Dispatcher
    log_hub: LogHub
    actions: ActionHub
    volumes: VolumeRegistry
    events: EventLog
    dashboard: Sessions
    info: dict  # cluster.json, as `shoal info` shows it
    on_unlock: Callable[[], None] = field(default=lambda: None)

    @property
    def node_id(self) -> str:
        return self.info["node_id"]
