"""Which keys a stack file may use, and how Swarm treats each (used, ignored, refused)."""
from __future__ import annotations

TOP_LEVEL_KEYS = frozenset({"version", "name", "services", "networks", "volumes", "configs", "secrets"})

# Options Shoal turns into the service spec.
SUPPORTED_SERVICE_KEYS = frozenset({
    "cap_add", "cap_drop", "command", "configs", "depends_on", "deploy", "dns", "dns_opt",
    "dns_search", "entrypoint", "env_file", "environment", "extra_hosts", "healthcheck",
    "hostname", "image", "init", "labels", "networks", "ports", "read_only", "restart",
    "secrets", "stdin_open", "stop_grace_period", "stop_signal", "sysctls", "tmpfs", "tty",
    "ulimits", "user", "volumes", "working_dir",
})
# Valid in a v3 file but not modelled by Shoal; accepted without a word (logging drivers
# are per-engine, isolation/credential_spec are Windows-only).
SILENT_SERVICE_KEYS = frozenset({"logging", "isolation", "credential_spec"})
# `docker stack deploy` warns "Ignoring unsupported options" and goes on.
IGNORED_SERVICE_KEYS = frozenset({
    "build", "cgroupns_mode", "cgroup_parent", "devices", "domainname", "external_links", "ipc",
    "links", "mac_address", "network_mode", "pid", "privileged", "restart", "security_opt",
    "shm_size", "userns_mode",
})
DEPRECATED_SERVICE_KEYS = frozenset({"container_name", "expose"})
# `docker stack deploy` refuses the file.
REFUSED_SERVICE_KEYS = frozenset({
    "extends", "volume_driver", "volumes_from", "cpu_quota", "cpu_shares", "cpuset", "mem_limit",
    "memswap_limit",
})
SERVICE_KEYS = (SUPPORTED_SERVICE_KEYS | SILENT_SERVICE_KEYS | IGNORED_SERVICE_KEYS
                | DEPRECATED_SERVICE_KEYS | REFUSED_SERVICE_KEYS)

DEPLOY_KEYS = frozenset({
    "mode", "replicas", "labels", "resources", "restart_policy", "placement", "update_config",
    "rollback_config", "endpoint_mode", "max_concurrent",
})
RESOURCE_KEYS = frozenset({"cpus", "memory", "pids", "generic_resources", "devices"})
RESTART_POLICY_KEYS = frozenset({"condition", "delay", "max_attempts", "window"})
PLACEMENT_KEYS = frozenset({"constraints", "preferences", "max_replicas_per_node"})
UPDATE_CONFIG_KEYS = frozenset({"parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order"})
HEALTHCHECK_KEYS = frozenset({"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"})
PORT_KEYS = frozenset({"target", "published", "protocol", "mode", "host_ip", "name", "app_protocol"})
VOLUME_MOUNT_KEYS = frozenset({"type", "source", "target", "read_only", "consistency", "bind", "volume", "tmpfs"})
FILE_REF_KEYS = frozenset({"source", "target", "uid", "gid", "mode"})
SERVICE_NETWORK_KEYS = frozenset({"aliases", "ipv4_address", "ipv6_address", "priority"})
DEPENDS_ON_KEYS = frozenset({"condition", "restart", "required"})

NETWORK_KEYS = frozenset({"name", "driver", "driver_opts", "ipam", "external", "internal", "attachable",
                          "labels", "enable_ipv6"})
VOLUME_KEYS = frozenset({"name", "driver", "driver_opts", "external", "labels"})
CONFIG_KEYS = frozenset({"name", "file", "external", "labels", "environment", "content", "template_driver"})
SECRET_KEYS = CONFIG_KEYS | {"driver", "driver_opts"}
