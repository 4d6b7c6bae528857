"""The manager's operations on cluster state: what the API calls, validated and stored.

Every user-facing change (deploy, update, scale, rm, node/config/secret changes)
lands here, is checked, and is written to the store in one transaction. Nothing
here talks to an engine: the orchestrator and the agents act on what is stored.
"""
from __future__ import annotations

import time
from typing import Optional

from shoal.core import task_states as ts
from shoal.core.file_versions import pin_spec, pin_unpinned, repin, uses
from shoal.ids import new_id
from shoal.manager import allocator
from shoal.manager.kernel_probe import encryption_refusal
from shoal.manager.errors import ApiError, Conflict, NotFound
from shoal.manager.keyring import Keyring
from shoal.model.objects import ConfigObj, NetworkObj, Node, NodeFacts, SealedData, SecretObj, Service, UpdateStatus
from shoal.model.specs import FileObjectSpec, FileRef, NetworkSpec, ServiceSpec, StackSpec
from shoal.store import Store

STACK_LABEL = "com.docker.stack.namespace"
CONFIG_MAX = 1000 * 1024
SECRET_MAX = 500 * 1024


def resolve(store: Store, cls, ref: str, what: str):
    """An object by id, unique id prefix, or name — as docker resolves references."""
    obj = store.get(cls, ref)
    if obj is not None:
        return obj
    if cls is Node:  # by hostname: a node that left and joined again is listed twice until removed
        matches = [n for n in store.all(Node) if n.description.hostname == ref]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ApiError(f"{what} {ref} is ambiguous ({len(matches)} matches found)")
    else:
        obj = store.by_name(cls, ref)
        if obj is not None:
            return obj
    matches = [o for o in store.all(cls) if o.id.startswith(ref)] if len(ref) >= 3 else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ApiError(f"{what} {ref} is ambiguous ({len(matches)} matches found)")
    raise NotFound(f"{what} {ref} not found")


class Cluster:
    def __init__(self, store: Store, keyring: Keyring, node_id: str):
        self.store = store
        self.keyring = keyring
        self.node_id = node_id

    def _foreign_subnets(self) -> list[str]:
        """Subnets nodes' engines use outside Shoal (their heartbeats' facts): avoided."""
        return [s for f in self.store.all(NodeFacts) for s in f.engine_subnets]

    # ------------------------------------------------------------------ stacks
    def deploy_stack(self, stack: StackSpec, prune: bool = False) -> list[str]:
        """Apply a stack file's desired state. Validates everything before writing anything."""
        st = self.store
        out: list[str] = []
        self._check_stack_references(stack)
        out += self._check_ports(stack)
        with st.txn():
            for net in stack.networks:
                if net.external:
                    continue
                if st.by_name(NetworkObj, net.name) is None:
                    self._create_network(net)
                    out.append(f"Creating network {net.name}")
            rotated: list[tuple[str, str, int]] = []  # (kind, name, version before) of changed data
            for obj in stack.secrets:
                if not obj.external:
                    out += self._upsert_secret(obj, stack.name, rotated)
            for obj in stack.configs:
                if not obj.external:
                    out += self._upsert_config(obj, stack.name, rotated)
            for spec in stack.services:
                svc = st.by_name(Service, spec.name)
                spec = self._pin(spec)  # onto the versions just written: one update per service
                if svc is not None and spec.force_update != svc.spec.force_update:
                    # A stack file cannot ask for a forced update (`service update --force` can):
                    # keep the stored counter, as docker does.
                    spec = spec.model_copy(update={"force_update": svc.spec.force_update})
                if svc is None:
                    out.append(f"Creating service {spec.name}")
                    self._create_service(spec)
                elif svc.spec != spec:
                    out.append(f"Updating service {spec.name} (id: {svc.id})")
                    self._update_service(_pinned_before(svc, rotated), spec)
            if prune:
                wanted = {s.name for s in stack.services}
                for svc in self.services_of_stack(stack.name):
                    if svc.spec.name not in wanted:
                        out.append(f"Removing service {svc.spec.name}")
                        self._remove_service(svc)
            for kind, name, before in rotated:  # services of other stacks that mount them
                out += self._roll_users(kind, name, before)
        return out

    def _check_stack_references(self, stack: StackSpec) -> None:
        st = self.store
        missing = []
        for net in stack.networks:
            if net.external and st.by_name(NetworkObj, net.name) is None:
                missing.append(f"network {net.name} declared as external, but could not be found. "
                               f"You need to create a network with that name first (shoal network create)")
        for obj in stack.configs:
            if obj.external and st.by_name(ConfigObj, obj.name) is None:
                missing.append(f"config not found: {obj.name} (declared as external; create it with "
                               f"`shoal config create {obj.name} FILE`)")
        for obj in stack.secrets:
            if obj.external and st.by_name(SecretObj, obj.name) is None:
                missing.append(f"secret not found: {obj.name} (declared as external; create it with "
                               f"`shoal secret create {obj.name} FILE`)")
        for obj in stack.configs:
            if obj.data is not None and len(obj.data) > CONFIG_MAX:
                missing.append(f"config {obj.name}: data is {len(obj.data)} bytes, over the 1000 KB limit")
            if obj.data is not None and not obj.data:
                missing.append(f"config {obj.name}: data is empty")
        for obj in stack.secrets:
            if obj.data is not None and len(obj.data) > SECRET_MAX:
                missing.append(f"secret {obj.name}: data is {len(obj.data)} bytes, over the 500 KB limit")
            if obj.data is not None and not obj.data:
                missing.append(f"secret {obj.name}: data is empty")
        if missing:
            raise ApiError("; ".join(missing))
        from shoal.core.constraints import validate_constraints
        for spec in stack.services:
            errors = validate_constraints(spec.placement.constraints)
            if errors:
                raise ApiError(f"service {spec.name}: invalid placement constraint: {'; '.join(errors)}")

    def _check_ports(self, stack: StackSpec) -> list[str]:
        """Refuse a published port another service holds; a port other processes hold on a node
        (its heartbeat says so) would not answer there: refused when it is so on every ready
        node, a warning naming the nodes otherwise (one node's claim never blocks the cluster)."""
        mine = {s.name for s in stack.services}
        held: dict[tuple[str, int], str] = {}
        for svc in self.store.all(Service):
            if svc.spec.name in mine:
                continue
            for p in svc.spec.ports:
                pub = p.published or svc.published_ports.get(f"{p.target}/{p.protocol}")
                if pub:
                    held[(p.protocol, pub)] = svc.spec.name
        ours = {(p.protocol, p.published) for s in self.store.all(Service) for p in s.spec.ports if p.published}
        ready = {n.id: n for n in self.store.all(Node) if n.state == "ready"}
        facts = {f.id: f for f in self.store.all(NodeFacts) if f.id in ready}
        seen: dict[tuple[str, int], str] = {}
        warnings: list[str] = []
        for spec in stack.services:
            for p in spec.ports:
                if p.published is None:
                    continue
                key = (p.protocol, p.published)
                if key in held:
                    raise Conflict(f"port {p.published}/{p.protocol} of service {spec.name} is already "
                                   f"published by service {held[key]}")
                if key in seen and seen[key] != spec.name:
                    raise Conflict(f"port {p.published}/{p.protocol} is published by both {seen[key]} and {spec.name}")
                seen[key] = spec.name
                if key in ours:
                    continue
                users = {nid: f.ports_in_use[f"{p.protocol}/{p.published}"] for nid, f in facts.items()
                         if f"{p.protocol}/{p.published}" in f.ports_in_use}
                if not users:
                    continue
                where = "; ".join(f"on node {ready[nid].description.hostname or nid}, {msg}"
                                  for nid, msg in sorted(users.items()))
                if len(users) == len(ready):
                    raise Conflict(f"port {p.published}/{p.protocol} of service {spec.name} cannot be "
                                   f"published: {where}")
                warnings.append(f"Warning: port {p.published}/{p.protocol} of service {spec.name} will not "
                                f"answer where another process holds it: {where}")
        return warnings

    def services_of_stack(self, stack: str) -> list[Service]:
        return [s for s in self.store.all(Service) if s.spec.stack == stack]

    def stacks(self) -> list[dict]:
        counts: dict[str, int] = {}
        for s in self.store.all(Service):
            if s.spec.stack:
                counts[s.spec.stack] = counts.get(s.spec.stack, 0) + 1
        return [{"name": k, "services": v} for k, v in sorted(counts.items())]

    def remove_stack(self, stack: str) -> list[str]:
        st = self.store
        services = self.services_of_stack(stack)
        networks = [n for n in st.all(NetworkObj) if n.spec.stack == stack]
        configs = [c for c in st.all(ConfigObj) if c.labels.get(STACK_LABEL) == stack]
        secrets = [c for c in st.all(SecretObj) if c.labels.get(STACK_LABEL) == stack]
        if not (services or networks or configs or secrets):
            raise NotFound(f"Nothing found in stack: {stack}")
        out = []
        with st.txn():
            for svc in sorted(services, key=lambda s: s.spec.name):
                out.append(f"Removing service {svc.spec.name}")
                self._remove_service(svc)
            for obj in secrets:
                out.append(f"Removing secret {obj.name}")
                st.delete(SecretObj, obj.id)
            for obj in configs:
                out.append(f"Removing config {obj.name}")
                st.delete(ConfigObj, obj.id)
            for net in networks:
                out.append(f"Removing network {net.spec.name}")
                st.delete(NetworkObj, net.id)
        return out

    # ---------------------------------------------------------------- networks
    def _create_network(self, spec: NetworkSpec) -> NetworkObj:
        if "encrypted" in spec.driver_opts:
            raise ApiError(encryption_refusal(spec.name))
        nets = self.store.all(NetworkObj)
        used = [n.subnet for n in nets]
        used += self._foreign_subnets()
        try:
            subnet, gateway, _ = allocator.allocate_subnet(used, spec.subnets[0] if spec.subnets else None)
            vni = allocator.allocate_vni(n.vni for n in nets)
        except allocator.AllocationError as e:
            raise ApiError(f"network {spec.name}: {e}") from None
        return self.store.put(NetworkObj(id=new_id(), spec=spec, subnet=subnet, gateway=gateway, vni=vni))

    def fill_vnis(self) -> None:
        """Networks stored before the overlay existed get their VXLAN segment."""
        with self.store.txn():
            nets = self.store.all(NetworkObj)
            for net in nets:
                if not net.vni:
                    self.store.put(net.model_copy(update={"vni": allocator.allocate_vni(n.vni for n in nets)}))

    def fix_subnet_conflicts(self) -> list[str]:
        """Move Shoal networks whose subnet some node's engine already uses for another network.

        A network Shoal chose (no `ipam` subnet in the file) gets a free subnet, and the
        services on it new VIPs in the matching block; tasks rejected meanwhile are replaced
        by the restart policy. A subnet the user asked for is left alone (its tasks stay
        rejected with the engine's message).
        """
        import ipaddress
        foreign = [ipaddress.ip_network(s) for s in self._foreign_subnets()]
        moved = []
        with self.store.txn():
            for net in self.store.all(NetworkObj):
                if net.spec.subnets or not net.subnet:
                    continue
                mine = ipaddress.ip_network(net.subnet)
                if not any(mine.overlaps(f) for f in foreign):
                    continue
                used = [n.subnet for n in self.store.all(NetworkObj)] + [str(f) for f in foreign]
                subnet, gateway, _ = allocator.allocate_subnet(used)
                self.store.put(net.model_copy(update={"subnet": subnet, "gateway": gateway, "node_addresses": {},
                                                "attach_ranges": {}}))
                vips_used = {ip for s in self.store.all(Service) for ip in s.virtual_ips.values()}
                for svc in self.store.all(Service):
                    if net.spec.name in svc.virtual_ips:
                        vip = allocator.allocate_vip(subnet, vips_used)
                        vips_used.add(vip)
                        self.store.put(svc.model_copy(update={
                            "virtual_ips": {**svc.virtual_ips, net.spec.name: vip}}))
                moved.append(f"network {net.spec.name}: {net.subnet} is used on a node; moved to {subnet}")
        return moved

    def create_network(self, spec: NetworkSpec) -> NetworkObj:
        if self.store.by_name(NetworkObj, spec.name):
            raise Conflict(f"network with name {spec.name} already exists")
        return self._create_network(spec)

    def remove_network(self, ref: str) -> str:
        net = resolve(self.store, NetworkObj, ref, "network")
        users = [s.spec.name for s in self.store.all(Service)
                 if any(a.network == net.spec.name for a in s.spec.networks)]
        if users:
            raise Conflict(f"network {net.spec.name} is in use by service(s) {', '.join(sorted(users))}")
        self.store.delete(NetworkObj, net.id)
        return net.spec.name

    # ---------------------------------------------------------------- services
    def _service_extras(self, spec: ServiceSpec, svc: Optional[Service]) -> dict:
        """VIPs per network and dynamic published ports, kept stable across updates."""
        vips = dict(svc.virtual_ips) if svc else {}
        ports = dict(svc.published_ports) if svc else {}
        if spec.endpoint_mode == "vip":
            used = {ip for s in self.store.all(Service) for ip in s.virtual_ips.values()}
            for att in spec.networks:
                net = self.store.by_name(NetworkObj, att.network)
                if net and att.network not in vips:
                    vips[att.network] = allocator.allocate_vip(net.subnet, used)
                    used.add(vips[att.network])
            vips = {k: v for k, v in vips.items() if any(a.network == k for a in spec.networks)}
        else:
            vips = {}
        taken = {p.published for s in self.store.all(Service) for p in s.spec.ports if p.published}
        taken |= {v for s in self.store.all(Service) for v in s.published_ports.values()}
        wanted = {}
        for p in spec.ports:
            if p.published is None and p.mode == "ingress":
                key = f"{p.target}/{p.protocol}"
                wanted[key] = ports.get(key) or allocator.allocate_port(taken)
                taken.add(wanted[key])
        return {"virtual_ips": vips, "published_ports": wanted}

    def _create_service(self, spec: ServiceSpec) -> Service:
        svc = Service(id=new_id(), spec=spec, **self._service_extras(spec, None))
        return self.store.put(svc)

    def _update_service(self, svc: Service, spec: ServiceSpec) -> Service:
        now = time.time()
        status = UpdateStatus(state="updating", started_at=now, message="update in progress")
        changed = svc.model_copy(update={
            "previous_spec": svc.spec,
            "spec": spec,
            "spec_version": svc.spec_version + 1,
            "update_status": status,
            "update_state": None,
            **self._service_extras(spec, svc),
        })
        return self.store.put(changed)

    def _scale_only(self, old: ServiceSpec, new: ServiceSpec) -> bool:
        return old.model_copy(update={"replicas": new.replicas}) == new

    def update_service(self, ref: str, spec: ServiceSpec, expect_version: Optional[int] = None) -> Service:
        svc = resolve(self.store, Service, ref, "service")
        if expect_version is not None and svc.version != expect_version:
            raise Conflict(f"service {svc.spec.name} changed meanwhile (version {svc.version}); retry")
        if spec.name != svc.spec.name:
            raise ApiError("a service cannot be renamed")
        spec = self._pin(spec)
        if spec == svc.spec:
            return svc
        if self._scale_only(svc.spec, spec):
            return self.store.put(svc.model_copy(update={"spec": spec}))
        return self._update_service(svc, spec)

    def scale(self, ref: str, replicas: int) -> Service:
        svc = resolve(self.store, Service, ref, "service")
        if svc.spec.mode not in ("replicated", "replicated-job"):
            raise ApiError(f"{svc.spec.name}: scale can only be used with replicated or replicated-job mode")
        if replicas < 0:
            raise ApiError("replicas must be 0 or more")
        return self.store.put(svc.model_copy(update={"spec": svc.spec.model_copy(update={"replicas": replicas})}))

    def rollback(self, ref: str) -> Service:
        svc = resolve(self.store, Service, ref, "service")
        if svc.previous_spec is None:
            raise ApiError(f"service {svc.spec.name}: there is no previous spec to roll back to")
        from shoal.core.update import start_rollback
        return self.store.put(start_rollback(svc, time.time()))

    def rebalance(self, ref: str) -> tuple[Service, list[str]]:
        """Spread a service's replicas evenly over the nodes now available (beyond Swarm), as a
        rolling update of the replicas to move; (the service, the slots moved)."""
        from shoal.core.rebalance import CannotRebalance, moves
        from shoal.core.update import start_rebalance
        svc = resolve(self.store, Service, ref, "service")
        if svc.update_status is not None and svc.update_status.state in ("updating", "rollback_started"):
            raise Conflict(f"service {svc.spec.name}: an update is in progress ({svc.update_status.message}); "
                           "rebalance it once it is over")
        try:
            slots = moves(svc, self.store.tasks_of_service(svc.id), self.store.all(Node))
        except CannotRebalance as e:
            raise ApiError(str(e)) from None
        if not slots:
            return svc, []
        return self.store.put(start_rebalance(svc, slots, time.time())), slots

    def _remove_service(self, svc: Service) -> None:
        st = self.store
        with st.txn():
            for t in st.tasks_of_service(svc.id):
                if t.desired_state != ts.REMOVE:
                    st.put(t.model_copy(update={"desired_state": ts.REMOVE}))
            st.delete(Service, svc.id)

    def remove_service(self, ref: str) -> str:
        svc = resolve(self.store, Service, ref, "service")
        self._remove_service(svc)
        return svc.spec.name

    # ---------------------------------------------------------- configs/secrets
    # Rotation keeps the name and makes a new version; each FileRef pins the version it mounts
    # (shoal.core.file_versions), so a rotation is an ordinary spec change of every user, and the
    # old version stays until nothing pins it (the orchestrator prunes it).
    def _file_object(self, kind: str, name: str):
        return self.store.by_name(ConfigObj if kind == "config" else SecretObj, name)

    def _pin(self, spec: ServiceSpec) -> ServiceSpec:
        """An accepted spec with its refs pinned: an unpinned ref to the object's current version;
        a pinned one (a spec read back, e.g. `service update` after a rollback) must still exist."""
        def version_of(kind: str, ref: FileRef) -> int:
            obj = self._file_object(kind, ref.source)
            if obj is None:
                raise ApiError(f"{kind} not found: {ref.source}")
            if not ref.version:
                return obj.data_version
            if ref.version not in obj.versions:
                kept = ", ".join(map(str, obj.versions))
                raise ApiError(f"{kind} {ref.source} has no version {ref.version} (kept: {kept})")
            return ref.version
        return pin_spec(spec, version_of)

    def _users(self, kind: str, name: str) -> list[str]:
        return sorted(s.spec.name for s in self.store.all(Service) if uses(s.spec, kind, name))

    def _roll_users(self, kind: str, name: str, before: int) -> list[str]:
        """A config/secret got a new version: move every service that mounts it onto that version,
        as a rolling update (its update_config applies; its previous_spec keeps the old pin)."""
        obj = self._file_object(kind, name)
        out = []
        for svc in sorted(self.store.all(Service), key=lambda s: s.spec.name):
            if not uses(svc.spec, kind, name):
                continue
            spec = repin(svc.spec, kind, name, obj.data_version)
            if spec is svc.spec:
                continue  # already on it (a service of the stack file that changed the data)
            self._update_service(_pinned_before(svc, [(kind, name, before)]), spec)
            out.append(f"Updating service {svc.spec.name} ({kind} {name} changed)")
        return out

    def create_config(self, name: str, data: bytes, labels: dict[str, str]) -> ConfigObj:
        _check_data("config", name, data, CONFIG_MAX)
        if self.store.by_name(ConfigObj, name):
            raise Conflict(f"config {name} already exists")
        return self.store.put(ConfigObj(id=new_id(), name=name, data=data, labels=labels))

    def update_config_data(self, ref: str, data: bytes) -> tuple[ConfigObj, list[str]]:
        obj = resolve(self.store, ConfigObj, ref, "config")
        _check_data("config", obj.name, data, CONFIG_MAX)
        if obj.data == data:
            return obj, []
        with self.store.txn():
            new = self.store.put(_next_config_version(obj, data))
            msgs = self._roll_users("config", obj.name, obj.data_version)
        return new, msgs

    def _upsert_config(self, spec: FileObjectSpec, stack: str, rotated: list[tuple[str, str, int]]) -> list[str]:
        obj = self.store.by_name(ConfigObj, spec.name)
        labels = {**spec.labels, STACK_LABEL: stack}
        data = spec.data or b""
        if obj is None:
            self.store.put(ConfigObj(id=new_id(), name=spec.name, data=data, labels=labels))
            return [f"Creating config {spec.name}"]
        changed = obj.data != data
        if not changed and obj.labels == labels:
            return []
        new = _next_config_version(obj, data) if changed else obj
        self.store.put(new.model_copy(update={"labels": labels}))
        if changed:
            rotated.append(("config", spec.name, obj.data_version))
        return [f"Updating config {spec.name}"]

    def remove_config(self, ref: str) -> str:
        obj = resolve(self.store, ConfigObj, ref, "config")
        users = self._users("config", obj.name)
        if users:
            raise Conflict(f"config '{obj.name}' is in use by the following service(s): {', '.join(users)}")
        self.store.delete(ConfigObj, obj.id)
        return obj.name

    def _seal(self, data: bytes) -> SealedData:
        ct, wk = self.keyring.seal(data)
        return SealedData(ciphertext=ct, wrapped_key=wk, digest=self.keyring.digest(data))

    def create_secret(self, name: str, data: bytes, labels: dict[str, str]) -> SecretObj:
        _check_data("secret", name, data, SECRET_MAX)
        if self.store.by_name(SecretObj, name):
            raise Conflict(f"secret {name} already exists")
        return self.store.put(SecretObj(id=new_id(), name=name, labels=labels, **self._seal(data).model_dump()))

    def update_secret_data(self, ref: str, data: bytes) -> tuple[SecretObj, list[str]]:
        obj = resolve(self.store, SecretObj, ref, "secret")
        _check_data("secret", obj.name, data, SECRET_MAX)
        if self.keyring.digest(data) == obj.digest:
            return obj, []
        with self.store.txn():
            new = self.store.put(_next_secret_version(obj, self._seal(data)))
            msgs = self._roll_users("secret", obj.name, obj.data_version)
        return new, msgs

    def _upsert_secret(self, spec: FileObjectSpec, stack: str, rotated: list[tuple[str, str, int]]) -> list[str]:
        obj = self.store.by_name(SecretObj, spec.name)
        labels = {**spec.labels, STACK_LABEL: stack}
        data = spec.data or b""
        if obj is None:
            self.store.put(SecretObj(id=new_id(), name=spec.name, labels=labels, **self._seal(data).model_dump()))
            return [f"Creating secret {spec.name}"]
        changed = self.keyring.digest(data) != obj.digest
        if not changed and obj.labels == labels:
            return []
        new = _next_secret_version(obj, self._seal(data)) if changed else obj
        self.store.put(new.model_copy(update={"labels": labels}))
        if changed:
            rotated.append(("secret", spec.name, obj.data_version))
        return [f"Updating secret {spec.name}"]

    def remove_secret(self, ref: str) -> str:
        obj = resolve(self.store, SecretObj, ref, "secret")
        users = self._users("secret", obj.name)
        if users:
            raise Conflict(f"secret '{obj.name}' is in use by the following service(s): {', '.join(users)}")
        self.store.delete(SecretObj, obj.id)
        return obj.name

    def secret_bytes(self, name: str, version: int = 0) -> Optional[bytes]:
        """One version of a secret, decrypted (0: the current one); None when it is gone."""
        obj = self.store.by_name(SecretObj, name)
        sealed = obj.sealed_at(version) if obj is not None else None
        if sealed is None:
            return None
        return self.keyring.open(sealed.ciphertext, sealed.wrapped_key)

    # ------------------------------------------------------------------- nodes
    def update_node(self, ref: str, label_add: dict[str, str], label_rm: list[str],
                    availability: Optional[str], role: Optional[str] = None) -> Node:
        node = resolve(self.store, Node, ref, "node")
        labels = dict(node.labels)
        for k in label_rm:
            if k not in labels:
                raise ApiError(f"key {k} doesn't exist in node's labels")
            labels.pop(k)
        labels.update(label_add)
        update: dict = {"labels": labels}
        if availability:
            if availability not in ("active", "pause", "drain"):
                raise ApiError(f"invalid availability {availability!r}: use active, pause or drain")
            update["availability"] = availability
        if role:
            update["role"] = role
        return self.store.put(node.model_copy(update=update))


def _pinned_before(svc: Service, rotated: list[tuple[str, str, int]]) -> Service:
    """`svc` with refs its spec left unpinned (stored before pins existed: "current") pinned to the
    version that was current before the rotation, so its previous_spec keeps the old bytes."""
    spec = svc.spec
    for kind, name, before in rotated:
        spec = pin_unpinned(spec, kind, name, before)
    return svc if spec is svc.spec else svc.model_copy(update={"spec": spec})


def _next_config_version(obj: ConfigObj, data: bytes) -> ConfigObj:
    """`data` as the new current version; the old one is kept while something pins it."""
    return obj.model_copy(update={"data": data, "data_version": obj.data_version + 1,
                                  "older_versions": {**obj.older_versions, obj.data_version: obj.data}})


def _next_secret_version(obj: SecretObj, sealed: SealedData) -> SecretObj:
    """`sealed` as the new current version; the old one is kept (sealed) while something pins it."""
    return obj.model_copy(update={**sealed.model_dump(), "data_version": obj.data_version + 1,
                                  "older_versions": {**obj.older_versions, obj.data_version: obj.sealed}})


def _check_data(kind: str, name: str, data: bytes, limit: int) -> None:
    if not data:
        raise ApiError(f"{kind} {name}: data is empty")
    if len(data) > limit:
        raise ApiError(f"{kind} {name}: data is {len(data)} bytes, over the {limit // 1024} KB limit")
