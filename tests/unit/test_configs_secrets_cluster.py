"""Issue 4, manager side without an engine: rotation rolls users, redeploys keep the roll, no plaintext."""
import pytest

from shoal.manager.cluster import Cluster
from shoal.manager.errors import ApiError, Conflict
from shoal.manager.keyring import Keyring
from shoal.model.objects import ConfigObj, SecretObj, Service
from shoal.model.specs import ContainerSpec, FileObjectSpec, FileRef, ServiceSpec, StackSpec
from shoal.store.sqlite import SqliteStore as Store


@pytest.fixture
def cl(tmp_path):
    k = Keyring(str(tmp_path / "cluster.key"))
    k.create(autolock=False)
    return Cluster(Store(str(tmp_path / "store.db")), k, "node1")


def stack(conf: bytes, sec: bytes) -> StackSpec:
    svc = ServiceSpec(name="s_app", stack="s", container=ContainerSpec(
        image="busybox", configs=[FileRef(source="s_conf", target="/conf")],
        secrets=[FileRef(source="s_sec", target="/run/secrets/sec")]))
    return StackSpec(name="s", services=[svc],
                     configs=[FileObjectSpec(name="s_conf", stack="s", data=conf)],
                     secrets=[FileObjectSpec(name="s_sec", stack="s", data=sec)])


def test_redeploy_with_changed_file_rolls_the_service(cl):
    cl.deploy_stack(stack(b"c1", b"s1"))
    v0 = cl.store.by_name(Service, "s_app").spec_version
    assert cl.deploy_stack(stack(b"c1", b"s1")) == []
    out = cl.deploy_stack(stack(b"c2", b"s1"))
    assert "Updating config s_conf" in out
    svc = cl.store.by_name(Service, "s_app")
    assert svc.spec_version > v0 and svc.spec.container.configs[0].version == 2  # rolled onto the new version
    assert cl.deploy_stack(stack(b"c2", b"s1")) == []  # and the next identical deploy changes nothing
    out = cl.deploy_stack(stack(b"c2", b"s2"))
    assert "Updating secret s_sec" in out and cl.store.by_name(Service, "s_app").spec.container.secrets[0].version == 2
    assert cl.store.by_name(ConfigObj, "s_conf").data_version == 2
    assert cl.store.by_name(SecretObj, "s_sec").data_version == 2
    assert cl.secret_bytes("s_sec") == b"s2"


def test_rotate_in_use_and_errors(cl):
    cl.deploy_stack(stack(b"c1", b"s1"))
    obj, msgs = cl.update_secret_data("s_sec", b"s3")
    assert obj.data_version == 2 and any("s_app" in m for m in msgs)
    assert cl.update_secret_data("s_sec", b"s3")[1] == []
    with pytest.raises(Conflict, match="s_app"):
        cl.remove_secret("s_sec")
    with pytest.raises(Conflict, match="s_app"):
        cl.remove_config("s_conf")
    with pytest.raises(ApiError, match="empty"):
        cl.create_secret("x", b"", {})
    with pytest.raises(ApiError, match="500 KB"):
        cl.create_secret("x", b"a" * (500 * 1024 + 1), {})
    with pytest.raises(ApiError, match="1000 KB"):
        cl.create_config("x", b"a" * (1000 * 1024 + 1), {})
    with pytest.raises(Conflict, match="already exists"):
        cl.create_secret("s_sec", b"x", {})


def test_missing_external_deploys_nothing(cl):
    st = stack(b"c", b"s")
    st.secrets[0] = FileObjectSpec(name="ext", external=True)
    with pytest.raises(ApiError, match="secret not found: ext"):
        cl.deploy_stack(st)
    assert cl.store.all(Service) == [] and cl.store.all(ConfigObj) == []
