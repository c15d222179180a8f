"""cluster.yaml is a valid Ray cluster-launcher config (Ray's own schema and checks), with
an autoscaling GPU worker type, no credentials, and the dashboard kept off the network;
the KubeRay examples parse and carry no secrets."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster.yaml"
KUBERAY = sorted((ROOT / "deploy" / "kuberay").glob("*.yaml"))
DEPLOY_FILES = [CLUSTER, *sorted(p for p in (ROOT / "deploy").rglob("*") if p.is_file())]

SECRET_PATTERNS = [
    r"AKIA[0-9A-Z]{16}",  # AWS access key id
    r"(?i)aws_secret_access_key",
    r"(?i)aws_access_key_id",
    r"(?i)secret_?key\s*[:=]",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"(?i)ssh_private_key",
    r"(?i)password\s*[:=]",
    r"RAY_AUTH_TOKEN\s*=\s*\S",  # a token value written into a command
    r"(?i)auth_token\s*:\s*['\"]?[0-9a-f]{16,}",
]


@pytest.fixture(scope="module")
def cfg() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_cluster_yaml_matches_rays_schema(cfg):
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)


def test_cluster_yaml_passes_rays_own_config_checks(cfg):
    """What `ray up` does before touching the cloud: merge the provider defaults, then
    validate (head type among the node types, worker counts, ...)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    full = prepare_config(copy.deepcopy(cfg))
    validate_config(full)
    assert full["provider"]["type"] == "aws"
    assert full["available_node_types"][full["head_node_type"]]["max_workers"] == 0


def test_cpu_head_and_autoscaling_gpu_workers(cfg):
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head takes no tasks"
    assert head["resources"].get("GPU", 0) == 0
    gpu = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu, "a GPU worker type with GPU resources declared"
    for t in gpu.values():
        assert t["resources"].get("CPU", 0) >= 1
        assert t.get("min_workers", 0) < t["max_workers"], "autoscaling: room between min and max"
        assert t["node_config"]["InstanceType"].startswith(("g5.", "g6.", "p4", "p5", "g4dn."))


def test_storage_access_through_instance_roles(cfg):
    for name, t in cfg["available_node_types"].items():
        assert t["node_config"].get("IamInstanceProfile", {}).get("Name"), f"{name}: no instance profile"


def test_dashboard_on_loopback_and_token_auth(cfg):
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in head
    for cmds in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "RAY_AUTH_MODE=token" in " ".join(cfg[cmds])


def test_setup_installs_this_version_with_its_pinned_dependencies(cfg):
    p = project()
    wheel = f"genpipe-{p['version']}-py3-none-any.whl"
    assert any(wheel in c for c in cfg["setup_commands"]), f"setup_commands must install {wheel}"
    assert "./dist" in cfg["file_mounts"].values()
    ray_pin = next(d for d in p["dependencies"] if d.startswith("ray["))
    import ray

    assert ray_pin.endswith(f"=={ray.__version__}"), "the wheel pins the Ray the cluster runs"
    py = re.search(r"--python (3\.\d+)", " ".join(cfg["setup_commands"])).group(1)
    assert p["requires-python"] == f">={py}"


@pytest.mark.parametrize("path", DEPLOY_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_credentials_in_deploy_files(path):
    text = path.read_text()
    for pat in SECRET_PATTERNS:
        assert not re.search(pat, text), f"{path.name}: matches {pat}"


def test_kuberay_manifests_parse():
    kinds = {}
    for path in KUBERAY:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert {"apiVersion", "kind", "metadata", "spec"} <= doc.keys(), path.name
                kinds.setdefault(doc["kind"], []).append(doc)
    assert {"RayJob", "RayCluster", "CronJob"} <= kinds.keys()

    (job,) = kinds["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    assert "python -m pipeline run " in job["spec"]["entrypoint"]
    ray_pin = next(d for d in project()["dependencies"] if d.startswith("ray["))
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == ray_pin.split("==")[1]

    (cluster,) = kinds["RayCluster"]
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    gpu = [g for g in cluster["spec"]["workerGroupSpecs"] if "nvidia.com/gpu" in str(g)]
    assert gpu and gpu[0]["minReplicas"] < gpu[0]["maxReplicas"]

    (cron,) = kinds["CronJob"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:3] == ["genpipe", "schedule", "run-due"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"], "the token comes from a Secret"
