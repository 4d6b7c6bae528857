"""The cluster CA, node certificates, join tokens: the identities nodes prove to each other.

Every node has one certificate: CN = its node id, OU = `node-manager` or `node-worker`,
O = the cluster id, signed by the cluster CA (ECDSA P-256, as Swarm's). A manager also
serves its API with a server certificate (OU `manager`) that agents check before they
trust anything the manager says. A node's private key is made on the node and never
leaves it: it sends a certificate signing request (at join, and at each renewal).

Join tokens are `SHLTKN-1-<digest of the CA certificate>-<secret>`, as Swarm's
`SWMTKN-1-…`: the joining node pins the CA by the digest before it trusts the manager,
and the secret says which role it may join as.
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import os
import random
import ssl
from dataclasses import dataclass
from typing import Optional

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CA_LIFETIME = 20 * 365 * 24 * 3600  # Swarm's root CA: 20 years
BACKDATE = 3600  # certificates start an hour early: clocks of nodes differ
TOKEN_PREFIX = "SHLTKN-1-"
ROLE_MANAGER, ROLE_WORKER = "node-manager", "node-worker"
SERVER_ROLE = "manager"  # OU of a manager's API (server) certificate
# The name every manager API certificate carries (a DNS SAN), and the only name a client
# accepts (checked in the handshake): a node certificate of the same CA does not carry it.
MANAGER_NAME = "shoal-manager"
NODE_ROLES = (ROLE_MANAGER, ROLE_WORKER)


class PkiError(ValueError):
    pass


@dataclass
class KeyPair:
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class CertInfo:
    common_name: str
    role: str
    org: str
    not_before: float
    not_after: float
    serial: int


# -- keys ---------------------------------------------------------------------------------

def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey, password: Optional[bytes] = None) -> bytes:
    """PKCS#8 PEM; encrypted under `password` when given (a manager's keys: see Keyring.tls_password)."""
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def load_key(pem: bytes, password: Optional[bytes] = None) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password if _encrypted(pem) else None)
    except (ValueError, TypeError) as e:
        raise PkiError(f"cannot read the private key: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("the private key is not an ECDSA key")
    return key


def _encrypted(pem: bytes) -> bool:
    return b"ENCRYPTED" in pem.split(b"\n", 1)[0]


# -- certificates -------------------------------------------------------------------------

def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def make_ca(cluster_name: str = "shoal", password: Optional[bytes] = None) -> KeyPair:
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{cluster_name}-root-ca")])
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(seconds=BACKDATE))
            .not_valid_after(now + datetime.timedelta(seconds=CA_LIFETIME))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem(key, password))


def make_csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A certificate signing request: the manager chooses the name, so the CSR carries none."""
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def sign(ca: KeyPair, public_key, common_name: str, role: str, org: str, lifetime: float,
         hosts: Optional[list[str]] = None, ca_password: Optional[bytes] = None) -> bytes:
    """A leaf certificate for `public_key`, as PEM."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = load_key(ca.key_pem, ca_password)
    now = _now()
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name),
             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    sans: list[x509.GeneralName] = []
    for h in hosts or []:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name(attrs))
               .issuer_name(ca_cert.subject)
               .public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(seconds=BACKDATE))
               .not_valid_after(now + datetime.timedelta(seconds=lifetime))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def issue(ca: KeyPair, common_name: str, role: str, org: str, lifetime: float,
          hosts: Optional[list[str]] = None, ca_password: Optional[bytes] = None,
          password: Optional[bytes] = None) -> KeyPair:
    """A key and its certificate, both made here (the manager's own: its node and server certs)."""
    key = new_key()
    cert = sign(ca, key.public_key(), common_name, role, org, lifetime, hosts, ca_password)
    return KeyPair(cert, key_pem(key, password))


def check_csr(csr_pem: bytes) -> None:
    """PkiError unless `csr_pem` is a CSR a manager signs (see sign_csr)."""
    _csr_key(csr_pem)


def sign_csr(ca: KeyPair, csr_pem: bytes, common_name: str, role: str, org: str, lifetime: float,
             ca_password: Optional[bytes] = None) -> bytes:
    """Sign a node's CSR (its key stays on the node); the identity is the manager's choice."""
    return sign(ca, _csr_key(csr_pem), common_name, role, org, lifetime, None, ca_password)


def _csr_key(csr_pem: bytes):
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise PkiError("the certificate signing request is not a PEM CSR") from None
    if not csr.is_signature_valid:
        raise PkiError("the certificate signing request's signature is invalid")
    pub = csr.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
        raise PkiError("the certificate signing request must be for an ECDSA P-256 key")
    return pub


def cert_info(cert_pem: bytes) -> CertInfo:
    cert = x509.load_pem_x509_certificate(cert_pem)

    def attr(oid) -> str:
        vals = cert.subject.get_attributes_for_oid(oid)
        return str(vals[0].value) if vals else ""
    return CertInfo(attr(NameOID.COMMON_NAME), attr(NameOID.ORGANIZATIONAL_UNIT_NAME),
                    attr(NameOID.ORGANIZATION_NAME), cert.not_valid_before_utc.timestamp(),
                    cert.not_valid_after_utc.timestamp(), cert.serial_number)


def verify_chain(cert_pem: bytes, ca_pem: bytes) -> None:
    """Is `cert_pem` signed by the CA of `ca_pem` (and in its validity)? PkiError if not."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca = x509.load_pem_x509_certificate(ca_pem)
    try:
        ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes,  # type: ignore[call-arg]
                               ec.ECDSA(cert.signature_hash_algorithm))  # type: ignore[arg-type]
    except InvalidSignature:
        raise PkiError("the certificate is not signed by the cluster CA") from None
    now = _now()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise PkiError("the certificate is not valid now")


def renew_at(info: CertInfo, rng: Optional[random.Random] = None) -> float:
    """When to renew: a random point between 50 % and 80 % of the lifetime (as Swarm), so that
    nodes given certificates together do not all come back together."""
    start = info.not_before + BACKDATE  # the back-dating is not lifetime
    life = max(0.0, info.not_after - start)
    return start + life * (rng or random).uniform(0.5, 0.8)


# -- files ----------------------------------------------------------------------------------

def write_pair(pair: KeyPair, cert_path: str, key_path: str) -> None:
    """Both files replaced atomically (a renewal must never leave a key without its cert)."""
    os.makedirs(os.path.dirname(cert_path), exist_ok=True)
    os.makedirs(os.path.dirname(key_path), mode=0o700, exist_ok=True)
    write_file(key_path, pair.key_pem, 0o600)
    write_file(cert_path, pair.cert_pem, 0o644)


def write_file(path: str, data: bytes, mode: int) -> None:
    """Replace `path` atomically (synced) with `data`."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_pair(cert_path: str, key_path: str) -> KeyPair:
    with open(cert_path, "rb") as c, open(key_path, "rb") as k:
        return KeyPair(c.read(), k.read())


# -- TLS contexts ---------------------------------------------------------------------------

def server_context(ca_path: str, cert_path: str, key_path: str, password: Optional[bytes] = None) -> ssl.SSLContext:
    """Clients may come without a certificate (a node joining with a token): the API's
    authorisation decides what each caller may do."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca_path)
    ctx.load_cert_chain(cert_path, key_path, password=password)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def client_context(ca_path: Optional[str], cert_path: Optional[str] = None, key_path: Optional[str] = None,
                   password: Optional[bytes] = None, ca_data: Optional[str] = None) -> ssl.SSLContext:
    """Trusts the cluster CA, and only a peer whose certificate names MANAGER_NAME (connect with
    server_hostname=MANAGER_NAME): managers are addressed by IP, and what matters is that
    the peer is a manager of this cluster, not what its address is."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_path, cadata=ca_data)
    if cert_path and key_path:
        ctx.load_cert_chain(cert_path, key_path, password=password)
    ctx.check_hostname = True
    ctx.hostname_checks_common_name = False
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def has_manager_name(cert_pem: bytes) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return MANAGER_NAME in sans.get_values_for_type(x509.DNSName)


def unverified_context() -> ssl.SSLContext:
    """Only to fetch the CA certificate before a join: what comes back is checked against the
    token's digest before anything else is trusted."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def peer_identity(peercert: dict | None) -> tuple[str, str, str] | None:
    """(common name, role, organisation) from an ssl peer certificate dict."""
    if not peercert:
        return None
    cn = role = None
    org = ""
    for rdn in peercert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                cn = v
            elif k == "organizationalUnitName":
                role = v
            elif k == "organizationName":
                org = v
    if cn and role:
        return cn, role, org
    return None


# -- join tokens ----------------------------------------------------------------------------

_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(data: bytes, width: int) -> str:
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = _B36[r] + out
    return out.rjust(width, "0")


def ca_digest(ca_pem: bytes) -> str:
    """The CA as a token carries it: SHA-256 of the certificate's PEM bytes, base 36."""
    return _base36(hashlib.sha256(ca_pem).digest(), 50)


def new_token_secret() -> str:
    return _base36(os.urandom(16), 25)


def make_token(ca_pem: bytes, secret: str) -> str:
    return f"{TOKEN_PREFIX}{ca_digest(ca_pem)}-{secret}"


def parse_token(token: str) -> tuple[str, str]:
    """(CA digest, secret) of a join token; PkiError when it is not one."""
    t = token.strip()
    if not t.startswith(TOKEN_PREFIX):
        raise PkiError("invalid join token: it should start with " + TOKEN_PREFIX)
    digest, _, secret = t[len(TOKEN_PREFIX):].partition("-")
    if len(digest) != 50 or len(secret) != 25 or not all(c in _B36 for c in digest + secret):
        raise PkiError("invalid join token")
    return digest, secret


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
