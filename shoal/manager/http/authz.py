"""Who is calling, and what each kind of caller may do: the API's one authorisation module.

Callers are known by how they came in:
- the unix socket in the data dir (root only): the local user, who may use the user API;
- mutual TLS with a node certificate of this cluster (CN = node id, OU = node-manager |
  node-worker): that node's agent, which may use the agent routes, for itself only, while
  the node is a member (a removed node's certificate is refused from then on);
- TLS without a certificate: a node that is joining, which may only fetch the CA and
  present a join token; or a browser on the dashboard, which may read the dashboard's
  routes with a session cookie (got once from a one-time link `shoal dashboard` prints) and
  write (scale, rollback) only with that cookie and the dashboard's own request header (a
  page of another site can send neither: the cookie is SameSite=Strict, and the header
  needs a CORS preflight the manager never grants).
While the cluster key is autolocked, every route but `info` and `unlock` answers 423.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable, Literal, Optional

from aiohttp import web

from shoal import pki
from shoal.manager.errors import ClusterLocked, Forbidden

# Route groups: who may call a route.
Audience = Literal["public", "user", "agent", "join", "local", "browser", "browser-write"]

SESSION_COOKIE = "shoal_session"
DASHBOARD_HEADER = "X-Shoal-Dashboard"


_IDENTITIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # TLS connection -> its peer


@dataclass(frozen=True)
class Caller:
    kind: Literal["local", "node", "anonymous"]
    node_id: str = ""  # for nodes: their id (the certificate's CN)
    role: str = ""  # for nodes: node-manager | node-worker
    org: str = ""  # for nodes: the cluster id their certificate names
    session: str = ""  # over TLS: the dashboard's session cookie, if sent
    dashboard_header: bool = False  # over TLS: the dashboard page's own request header was sent


def identify(request: web.Request) -> Caller:
    transport = request.transport
    if transport is None:
        raise Forbidden("no transport")
    ssl_obj = transport.get_extra_info("ssl_object")
    if ssl_obj is None:
        if isinstance(transport.get_extra_info("sockname"), str):  # the unix socket
            return Caller("local")
        raise Forbidden("the manager API is served over TLS only")
    try:  # a connection's certificate does not change: read it once (agents keep theirs open)
        ident = _IDENTITIES[ssl_obj]
    except KeyError:
        ident = _IDENTITIES[ssl_obj] = pki.peer_identity(ssl_obj.getpeercert())
    if ident is None:
        return Caller("anonymous", session=request.cookies.get(SESSION_COOKIE, "")[:128],
                      dashboard_header=request.headers.get(DASHBOARD_HEADER) == "1")
    cn, role, org = ident
    if role not in pki.NODE_ROLES:
        raise Forbidden(f"a certificate with role {role!r} has no access to this API")
    return Caller("node", cn, role, org)


class Policy:
    """Decides whether a caller may use a route of an audience.

    `member(node_id, org)` says whether a node certificate still belongs to the cluster (its
    node exists, it was not removed, the certificate's organisation is this cluster)."""

    def __init__(self, member: Callable[[str, str], Optional[str]], locked: Callable[[], bool],
                 session_valid: Callable[[str], bool] = lambda session: False):
        self.member = member
        self.locked = locked
        self.session_valid = session_valid

    def check(self, caller: Caller, audience: Audience) -> None:
        if self.locked() and audience not in ("public", "local"):
            raise ClusterLocked("The cluster is encrypted and needs to be unlocked before it can be used. "
                                "Please use \"shoal unlock\" to unlock it.")
        if audience == "public":
            return
        if audience == "join":
            if caller.kind == "node":
                raise Forbidden("this node already has a certificate of the cluster")
            return
        if audience in ("user", "local"):
            if caller.kind != "local":
                raise Forbidden("the user API is served on the manager's unix socket only"
                                if caller.kind == "node" else "a client certificate is required")
            return
        if audience in ("browser", "browser-write"):
            if caller.kind != "anonymous" or not self.session_valid(caller.session):
                raise Forbidden("not logged in to the dashboard: open the link `shoal dashboard` prints "
                                "on a manager")
            if audience == "browser-write" and not caller.dashboard_header:
                raise Forbidden(f"changes from the dashboard need its {DASHBOARD_HEADER} header")
            return
        # agent routes: a member node, for itself
        if caller.kind != "node":
            raise Forbidden("agent routes need a node certificate")
        why = self.member(caller.node_id, caller.org)
        if why:
            raise Forbidden(why)
