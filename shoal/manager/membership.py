"""Who belongs to the cluster: join tokens, joining, certificate renewal, removal, leaving.

A node joins with a token (`SHLTKN-1-<CA digest>-<secret>`): the manager checks the
secret (constant time) to learn the role, creates the node, and signs the node's CSR
with the node's id as CN, its role as OU and the cluster id as O. A node renews its
certificate with its current one. A removed node's id is refused from then on (until
its last certificate would have expired anyway).
"""
from __future__ import annotations

import base64

import ipaddress
import logging
import time
from typing import Optional

from shoal import pki
from shoal.core import task_states as ts
from shoal.ids import new_id
from shoal.manager.ca import CertAuthority
from shoal.manager.errors import ApiError, Conflict, Forbidden
from shoal.manager.keyring import Keyring
from shoal.model.objects import ClusterObj, Node, NodeDescription, NodeFacts, SealedData, TaskStatus
from shoal.store import Store

log = logging.getLogger("shoal.membership")

CLUSTER = "cluster"
MANAGER_NEEDS_ETCD = ("joining as a manager needs the cluster's state in etcd, which every manager "
                      "reaches (`shoal init --store etcd://HOST:PORT`); this cluster keeps it in SQLite on "
                      "its one manager: only workers can join it (`shoal join-token worker`)")


class Membership:
    def __init__(self, store: Store, ca: CertAuthority, keyring: Keyring, cluster_id: str,
                 store_spec: str = "sqlite", etcd_members=None):
        self.store = store
        self.etcd_members = etcd_members  # etcd_member.Members when the managers run their own etcd
        self.ca = ca
        self.keyring = keyring
        self.cluster_id = cluster_id
        self.store_spec = store_spec  # several managers need a store they all reach (etcd)

    @property
    def managers_can_join(self) -> bool:
        return self.store_spec != "sqlite"

    # -- the cluster object ------------------------------------------------------------
    def settings(self) -> ClusterObj:
        obj = self.store.get(ClusterObj, CLUSTER)
        return obj if obj is not None else ClusterObj(id=CLUSTER)

    def ensure(self, heartbeat_period: Optional[float] = None, cert_expiry: Optional[float] = None,
               data_path_port: Optional[int] = None) -> ClusterObj:
        """The cluster object, made on first start: the CA certificate and both join secrets."""
        obj = self.store.get(ClusterObj, CLUSTER)
        if obj is not None and obj.worker_token is not None and obj.ca_cert:
            return obj
        base = obj or ClusterObj(id=CLUSTER)
        update: dict = {"ca_cert": self.ca.ca_pem.decode(), "worker_token": self._seal(pki.new_token_secret()),
                        "manager_token": self._seal(pki.new_token_secret())}
        if heartbeat_period:
            update["heartbeat_period"] = heartbeat_period
        if cert_expiry:
            update["cert_expiry"] = cert_expiry
        if data_path_port:
            update["data_path_port"] = data_path_port
        return self.store.put(base.model_copy(update=update))

    def update_settings(self, heartbeat_period: Optional[float], cert_expiry: Optional[float]) -> ClusterObj:
        obj = self.settings()
        update: dict = {}
        if heartbeat_period is not None:
            update["heartbeat_period"] = heartbeat_period
        if cert_expiry is not None:
            update["cert_expiry"] = cert_expiry
        return self.store.put(obj.model_copy(update=update)) if update else obj

    def _seal(self, secret: str) -> SealedData:
        ct, wk = self.keyring.seal(secret.encode())
        return SealedData(ciphertext=ct, wrapped_key=wk, digest=self.keyring.digest(secret.encode()))

    def _secret(self, sealed: Optional[SealedData]) -> str:
        if sealed is None:
            raise ApiError("the cluster has no join token yet", 503)
        return self.keyring.open(sealed.ciphertext, sealed.wrapped_key).decode()

    # -- tokens ------------------------------------------------------------------------
    def token(self, role: str, rotate: bool = False) -> str:
        if role not in ("worker", "manager"):
            raise ApiError(f"unknown role {role!r}: use worker or manager")
        obj = self.settings()
        field = f"{role}_token"
        if rotate:
            obj = self.store.put(obj.model_copy(update={field: self._seal(pki.new_token_secret())}))
            log.info("the %s join token was rotated", role)
        return pki.make_token(self.ca.ca_pem, self._secret(getattr(obj, field)))

    def _role_of(self, token: str) -> str:
        try:
            digest, secret = pki.parse_token(token)
        except pki.PkiError as e:
            raise Forbidden(str(e)) from None
        if not pki.same_secret(digest, pki.ca_digest(self.ca.ca_pem)):
            raise Forbidden("the join token is for another cluster (its CA digest differs)")
        obj = self.settings()
        # Both compared, in constant time, whatever the first gives.
        is_worker = pki.same_secret(secret, self._secret(obj.worker_token))
        is_manager = pki.same_secret(secret, self._secret(obj.manager_token))
        if is_worker:
            return "worker"
        if is_manager:
            return "manager"
        raise Forbidden("invalid join token")

    # -- joining -----------------------------------------------------------------------
    def plan_join(self, token: str, advertise_addr: str, peer: str) -> tuple[str, str, str]:
        """(role, new node id, address) for a join, once its token is checked."""
        role = self._role_of(token)
        if role == "manager" and not self.managers_can_join:
            raise ApiError(MANAGER_NEEDS_ETCD, 501)
        addr = advertise_addr or peer
        try:
            addr = str(ipaddress.ip_address(addr))
        except ValueError:
            raise ApiError(f"advertise address {advertise_addr!r} is not an IP address") from None
        return role, new_id(), addr

    def join(self, plan: tuple[str, str, str], csr: str, hostname: str, availability: str,
             etcd_member: Optional[dict] = None) -> dict:
        """The node made and its CSR signed; a manager also gets the cluster's keys (and, when
        the managers run their own etcd, the member `add_etcd_member` added for it)."""
        role, node_id, addr = plan
        obj = self.settings()
        try:
            cert = self.ca.sign_node(csr.encode(), node_id, pki.ROLE_MANAGER if role == "manager" else pki.ROLE_WORKER,
                                     obj.cert_expiry)
        except pki.PkiError as e:
            raise ApiError(str(e)) from None
        self.store.put(Node(id=node_id, role=role, availability=availability, state="unknown",
                            message="joined; waiting for its first heartbeat", addr=addr,
                            description=NodeDescription(hostname=hostname)))
        log.info("node %s (%s, %s) joined as a %s", node_id, hostname or "?", addr, role)
        answer = {"node_id": node_id, "cluster_id": self.cluster_id, "role": role, "cert": cert.decode(),
                  "ca": self.ca.ca_pem.decode(), "managers": self.managers(),
                  "heartbeat_period": obj.heartbeat_period}
        if role == "manager":
            answer["manager"] = self._manager_material(obj)
            if etcd_member is not None:
                answer["manager"]["etcd"] = {**etcd_member, **self._etcd_material()}
        return answer

    def needs_etcd_member(self, plan: tuple[str, str, str]) -> bool:
        return plan[0] == "manager" and self.etcd_members is not None

    def add_etcd_member(self, plan: tuple[str, str, str], peer_port: int) -> dict:
        """The joining manager's etcd member, added as a learner (it votes once the leader
        promotes it, after it has caught up). Blocking (etcd may ask to wait until the last
        member added is healthy): run in a thread."""
        from shoal.manager.etcd_member import peer_url
        from shoal.store import StoreUnavailable
        _role, node_id, addr = plan
        try:
            return self.etcd_members.add_learner(node_id, peer_url(addr, peer_port))
        except ValueError as e:
            raise Conflict(str(e)) from None
        except StoreUnavailable as e:
            raise ApiError(f"adding the new manager's etcd member failed, nothing was changed: {e}", 503) from None

    def _etcd_material(self) -> dict:
        """The etcd CA (its key as the managers keep it: encrypted under the cluster key)."""
        layout = self.ca.layout
        with open(layout.etcd_ca_cert, "rb") as f:
            ca_cert = f.read()
        with open(layout.etcd_ca_key, "rb") as f:
            ca_key = f.read()
        return {"ca_cert": ca_cert.decode(), "ca_key": base64.b64encode(ca_key).decode()}

    def _manager_material(self, obj: ClusterObj) -> dict:
        """What a new manager needs to be one: the cluster key (as this manager keeps it: sealed
        under the unlock key when the cluster is autolocked), the CA's key (encrypted under a
        password derived from the cluster key) and where the store is. Sent only over the join's
        TLS, to a holder of the manager token (Swarm's manager token grants as much)."""
        with open(self.keyring.path, "rb") as f:
            cluster_key = f.read()
        with open(self.ca.layout.ca_key, "rb") as f:
            ca_key = f.read()
        return {"cluster_key": base64.b64encode(cluster_key).decode(), "ca_key": base64.b64encode(ca_key).decode(),
                "store": self.store_spec, "cert_expiry": obj.cert_expiry}

    def managers(self) -> list[str]:
        return sorted(f"{n.addr}:{n.port}" for n in self.store.all(Node) if n.role == "manager" and n.addr and n.port)

    def renew(self, node_id: str, role: str, csr: str) -> dict:
        """A new certificate for a member's new key, authenticated by its current certificate."""
        node = self.store.get(Node, node_id)
        if node is None:
            raise Forbidden(f"node {node_id} is not a member of this cluster")
        want = pki.ROLE_MANAGER if node.role == "manager" else pki.ROLE_WORKER
        try:
            cert = self.ca.sign_node(csr.encode(), node_id, want, self.settings().cert_expiry)
        except pki.PkiError as e:
            raise ApiError(str(e)) from None
        log.info("renewed the certificate of node %s (%s)", node.description.hostname, node_id)
        return {"cert": cert.decode(), "ca": self.ca.ca_pem.decode()}

    # -- who is a member ---------------------------------------------------------------
    def refusal(self, node_id: str, org: str) -> Optional[str]:
        """Why a node certificate is refused (None: it is a member's)."""
        if org and org != self.cluster_id:
            return "the certificate is for another cluster"
        obj = self.store.get(ClusterObj, CLUSTER)
        if obj is not None and node_id in obj.removed_nodes:
            return f"node {node_id} was removed from the cluster"
        if self.store.get(Node, node_id) is None:
            return f"node {node_id} is not a member of this cluster"
        return None

    # -- the manager role ----------------------------------------------------------------
    def promote(self, node: Node) -> bool:
        """`node promote`: the node becomes a manager. Its daemon learns it from its next
        heartbeat and asks for what a manager needs (`promotion`). False: it already is one."""
        if node.role == "manager":
            return False
        if not self.managers_can_join:
            raise ApiError(MANAGER_NEEDS_ETCD.replace("joining as a manager", "a second manager"), 501)
        self.store.put(node.model_copy(update={"role": "manager"}))
        log.info("node %s (%s) promoted to a manager", node.description.hostname, node.id)
        return True

    def check_demote(self, node: Node) -> bool:
        """Whether `node demote` may go on (False: the node is a worker already). Refused when
        it is the last manager, or when the managers left reachable would not make a quorum
        of those that stay (as Swarm refuses it)."""
        if node.role != "manager":
            return False
        name = node.description.hostname or node.id
        managers = [n for n in self.store.all(Node) if n.role == "manager"]
        if len(managers) == 1:
            raise Conflict(f"node {name} is the last manager of the cluster: it cannot be demoted "
                           "(`shoal leave --force` ends the cluster)")
        staying = [n for n in managers if n.id != node.id]
        reachable = [n for n in staying if n.state == "ready"]
        quorum = len(staying) // 2 + 1
        # with an etcd of the user's, its quorum is its own business; with the managers' own
        # members, one member a manager
        if self.etcd_members is not None and len(reachable) < quorum:
            raise Conflict(f"demoting {name} would leave {len(staying)} managers of which {len(reachable)} are "
                           f"reachable: the cluster would lose its quorum ({quorum} needed). Bring the "
                           "unreachable managers back, or remove the lost ones (`node rm --force`), first")
        return True

    def demote(self, node: Node) -> None:
        """`node demote`, once checked (and, for another manager, its etcd member removed: a
        manager demoting itself removes its own before its member stops, see daemon.py): the
        node is a worker from now on; its daemon learns it from its next heartbeat."""
        self.store.put(node.model_copy(update={"role": "worker", "leader": False}))
        log.info("manager %s (%s) demoted to a worker", node.description.hostname, node.id)

    def promotion(self, node_id: str) -> tuple[str, str, str]:
        """The plan for a promoted node asking for a manager's keys (its daemon, with its node
        certificate): refused unless the store says it is a manager."""
        node = self.store.get(Node, node_id)
        if node is None or node.role != "manager":
            raise Forbidden(f"node {node_id} is not a manager")
        return "manager", node_id, node.addr

    def promoted(self, plan: tuple[str, str, str], etcd_member: Optional[dict]) -> dict:
        answer = {"node_id": plan[1], "cluster_id": self.cluster_id, "manager": self._manager_material(self.settings())}
        if etcd_member is not None:
            answer["manager"]["etcd"] = {**etcd_member, **self._etcd_material()}
        return answer

    # -- leaving -----------------------------------------------------------------------
    def remove(self, node: Node, force: bool, self_id: str) -> None:
        """`node rm`: the node's certificate is refused from now on; its tasks are orphaned
        (replaced elsewhere by the next pass)."""
        name = node.description.hostname or node.id
        if node.id == self_id:
            raise Conflict(f"node {name} is the manager you are talking to: it cannot remove itself "
                           "(`shoal leave --force` on it)")
        if node.role == "manager" and (node.state == "ready" or not force):
            raise Conflict(f"node {name} is a manager: it cannot be removed while it is one (a manager "
                           "lost for good, down, is removed with --force: its etcd member goes with it)")
        if node.state == "ready" and not force:
            raise Conflict(f"node {node.description.hostname or node.id} is not down and can't be removed "
                           "(use --force to remove it anyway: its tasks are moved, its certificate refused)")
        st = self.store
        now = time.time()
        if node.role == "manager" and self.etcd_members is not None:
            from shoal.store import StoreUnavailable
            try:
                self.etcd_members.remove(node.id)  # it would count towards the quorum forever
            except StoreUnavailable as e:
                raise ApiError(f"removing the manager's etcd member failed, nothing was changed: {e}", 503) from None
        with st.txn():
            self._retire(node.id, now)
            for t in st.tasks_of_node(node.id):
                if not ts.is_terminal(t.status.state) and t.status.state not in (ts.NEW, ts.PENDING):
                    st.put(t.model_copy(update={"desired_state": ts.SHUTDOWN, "status": TaskStatus(
                        state=ts.ORPHANED, timestamp=now, message="node removed from the cluster",
                        err="node removed from the cluster")}))
            if st.get(NodeFacts, node.id) is not None:
                st.delete(NodeFacts, node.id)
            st.delete(Node, node.id)
        log.info("node %s (%s) removed", node.description.hostname, node.id)

    def _retire(self, node_id: str, now: float) -> None:
        """The node's certificate is refused from now on (until it would have expired)."""
        obj = self.settings()
        removed = {k: v for k, v in obj.removed_nodes.items() if v > now}  # forget expired entries
        removed[node_id] = now + obj.cert_expiry + pki.BACKDATE
        self.store.put(obj.model_copy(update={"removed_nodes": removed}))

    def left(self, node_id: str) -> None:
        """A worker said it leaves (`shoal leave`; it stops its containers itself): down at once,
        its tasks orphaned and replaced. It stays listed, as in Swarm, until `node rm`."""
        st = self.store
        node = st.get(Node, node_id)
        if node is None:
            return
        now = time.time()
        with st.txn():
            # the node erased its identity: its certificate is retired, so that a heartbeat
            # still on its way cannot bring it back to ready
            self._retire(node_id, now)
            st.put(node.model_copy(update={"state": "down", "message": "left the cluster"}))
            for t in st.tasks_of_node(node_id):
                if t.status.state in ts.ON_NODE:
                    st.put(t.model_copy(update={"desired_state": ts.SHUTDOWN, "status": TaskStatus(
                        state=ts.ORPHANED, timestamp=now, message="node left the cluster")}))
