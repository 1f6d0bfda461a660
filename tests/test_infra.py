"""The deployment material in infra/ checked against what its readers expect: Ray's cluster
launcher schema and `ray up`'s own checks, KubeRay's rules for a RayCluster, systemd, and
the hwmatrix CLI that every start command calls."""
from __future__ import annotations

import configparser
import copy
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from string import Template

import jsonschema
import pytest
import yaml

from agent.cluster.enroll import check_address
from agent.cluster.worker import BENCH_RESOURCE
from coordinator.cli.main import build_parser
from tests.conftest import REPO

INFRA = REPO / "infra"
TOKEN_PATH = "/etc/hwmatrix/ray-token"
PROBE_OWNED_LABELS = {"hwm-class", "hwm-host"}   # per machine: only the probe may set them


# ---------------------------------------------------------------- helpers

def launcher_config() -> dict:
    return yaml.safe_load((INFRA / "ray-cluster.yaml").read_text())


def raycluster() -> dict:
    docs = [d for d in yaml.safe_load_all((INFRA / "kuberay-raycluster.yaml").read_text()) if d]
    clusters = [d for d in docs if d.get("kind") == "RayCluster"]
    assert len(clusters) == 1, "the manifest holds exactly one RayCluster"
    return clusters[0]


def agent_unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str            # systemd keys are case-sensitive
    unit.read(INFRA / "hwmatrix-agent.service")
    return unit


def shell_steps(command: str) -> list[list[str]]:
    """A one-line shell command as its simple commands (split at ; and &&), `exec` dropped."""
    steps = []
    for part in re.split(r";|&&", command):
        words = shlex.split(part)
        if words and words[0] == "exec":
            words = words[1:]
        if words:
            steps.append(words)
    return steps


def is_ray_start(words: list[str]) -> bool:
    return Path(words[0]).name == "ray" and words[1:2] == ["start"]


def is_hwmatrix(words: list[str]) -> bool:
    return Path(words[0]).name == "hwmatrix"


def env_at_start(command: str) -> dict[str, str] | None:
    """What `export` has set when the command reaches `ray start` / `hwmatrix`; None if it
    never does."""
    env: dict[str, str] = {}
    for words in shell_steps(command):
        if words[0] == "export":
            env.update(w.split("=", 1) for w in words[1:] if "=" in w)
        elif is_ray_start(words) or is_hwmatrix(words):
            return env
    return None


def step(command: str, which) -> list[str] | None:
    return next((w for w in shell_steps(command) if which(w)), None)


def parse_join(argv: list[str]):
    """The hwmatrix CLI's reading of an `hwmatrix agent join ...` argv (SystemExit if it rejects it)."""
    assert is_hwmatrix(argv), argv
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.agent_command) == ("agent", "join"), argv
    return args


def ray_start_params(argv: list[str]) -> dict:
    """`ray start`'s own reading of an argv (click raises on an unknown option)."""
    from ray.scripts.scripts import start

    return start.make_context("start", argv[2:]).params


def worker_types(config: dict) -> dict[str, dict]:
    return {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}


def pod_specs(cluster: dict) -> dict[str, dict]:
    spec = cluster["spec"]
    pods = {"head": spec["headGroupSpec"]["template"]["spec"]}
    pods.update({g["groupName"]: g["template"]["spec"] for g in spec["workerGroupSpecs"]})
    return pods


def kuberay_resources(params: dict) -> dict:
    """rayStartParams' `resources` as Ray gets it: KubeRay pastes the value into a bash
    command line, where the outer double quotes and the backslashes go."""
    (value,) = shlex.split(params["resources"])
    return json.loads(value)


def unit_environment(unit: configparser.ConfigParser) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(unit["Service"]["Environment"]))


# ---------------------------------------------------------------- the cluster launcher

def test_launcher_config_validates_against_the_schema_shipped_in_the_installed_ray():
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = launcher_config()
    jsonschema.validate(config, schema)
    # the schema is strict enough to catch a misspelt key, so passing it means something
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**config, "head_start_ray_command": []}, schema)


def test_launcher_config_passes_the_checks_ray_up_runs_before_it_launches_anything():
    # `ray up` fills in the provider's defaults, then validates; both are Ray's own code
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(launcher_config())))


def test_launcher_head_node_type_offers_no_benchmark_slot():
    config = launcher_config()
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"][BENCH_RESOURCE] == 0


def test_launcher_has_at_least_two_worker_types_each_with_exactly_one_benchmark_slot():
    workers = worker_types(launcher_config())
    assert len(workers) >= 2
    for name, node_type in workers.items():
        assert node_type["resources"].get(BENCH_RESOURCE) == 1, name
        assert node_type.get("min_workers", 0) >= 1, f"{name}: hwmatrix never asks the autoscaler for nodes"


def test_launcher_worker_labels_declare_the_node_type_and_leave_per_machine_facts_to_the_probe():
    from ray._private.label_utils import validate_node_label_syntax

    for name, node_type in worker_types(launcher_config()).items():
        labels = node_type["labels"]
        validate_node_label_syntax(labels)
        assert labels["hwm-node-type"] == name
        assert not PROBE_OWNED_LABELS & labels.keys(), f"{name} would override the probe's {PROBE_OWNED_LABELS}"


def test_launcher_turns_token_auth_on_before_every_ray_start_and_agent_join():
    config = launcher_config()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starting = [c for c in config[key] if env_at_start(c) is not None]
        assert starting, f"{key} never starts Ray"
        for command in starting:
            env = env_at_start(command)
            assert env.get("RAY_AUTH_MODE") == "token", command
            assert env.get("RAY_AUTH_TOKEN_PATH") == TOKEN_PATH, command


def test_launcher_head_starts_ray_with_the_autoscaler_the_gcs_port_and_no_benchmark_slot():
    (command,) = [c for c in launcher_config()["head_start_ray_commands"] if step(c, is_ray_start)]
    params = ray_start_params(step(command, is_ray_start))
    assert params["head"] and params["port"] == 6379
    assert params["autoscaling_config"] == "~/ray_bootstrap_config.yaml"
    assert json.loads(params["resources"]) == {BENCH_RESOURCE: 0}


def test_launcher_workers_join_through_hwmatrix_so_the_probe_sets_their_labels():
    (command,) = [c for c in launcher_config()["worker_start_ray_commands"] if step(c, is_hwmatrix)]
    args = parse_join(step(command, is_hwmatrix))
    assert args.token_file == TOKEN_PATH
    check_address(Template(args.address).substitute(RAY_HEAD_IP="10.0.0.5"))
    # the launcher runs start commands over SSH and waits for them: --block would hang `ray up`
    assert not args.block


def test_launcher_installs_the_token_it_copies_as_the_file_the_start_commands_name():
    config = launcher_config()
    copied = [remote for remote, local in config["file_mounts"].items() if local.endswith("/hwmatrix/ray-token")]
    assert len(copied) == 1, "the token is copied from the hwmatrix default token file"
    installs = [c for c in config["setup_commands"] if TOKEN_PATH in c]
    assert installs and "-m 0600" in installs[0] and copied[0] in installs[0]


# ---------------------------------------------------------------- no token anywhere in infra/

TOKEN_SHAPE = re.compile(r"\b[0-9a-fA-F]{32,}\b")


def test_the_token_detector_recognises_a_token_hwmatrix_makes(tmp_path):
    from coordinator.cluster.head import ensure_token

    token = ensure_token(tmp_path / "ray-token").read_text().strip()
    assert TOKEN_SHAPE.search(f"token: {token}")


def test_no_literal_token_and_no_token_in_the_environment_anywhere_in_infra():
    known = []
    for candidate in (os.environ.get("HWMATRIX_TOKEN_FILE"), "~/.config/hwmatrix/ray-token", TOKEN_PATH):
        path = Path(candidate).expanduser() if candidate else None
        if path and path.is_file() and os.access(path, os.R_OK) and path.read_text().strip():
            known.append(path.read_text().strip())
    files = [p for p in INFRA.rglob("*") if p.is_file()]
    assert len(files) >= 4
    for path in files:
        text = path.read_text()
        assert not TOKEN_SHAPE.search(text), f"{path.name} holds something shaped like a token"
        assert not re.search(r"RAY_AUTH_TOKEN(?!_PATH)", text), f"{path.name} passes the token as a value"
        assert "secretKeyRef" not in text and "stringData" not in text, path.name
        for token in known:
            assert token not in text, f"{path.name} holds this machine's token"


# ---------------------------------------------------------------- KubeRay

def test_kuberay_manifest_is_a_ray_io_v1_raycluster_with_a_valid_name():
    cluster = raycluster()
    assert cluster["apiVersion"] == "ray.io/v1"
    assert cluster["kind"] == "RayCluster"
    name = cluster["metadata"]["name"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63   # KubeRay: DNS-1035 label
    assert cluster["spec"]["rayVersion"] == "2.60.0"


def test_kuberay_has_a_head_group_and_two_worker_groups_kuberay_accepts():
    spec = raycluster()["spec"]
    assert spec["headGroupSpec"]["template"]["spec"]["containers"]
    groups = spec["workerGroupSpecs"]
    assert len(groups) >= 2
    assert len({g["groupName"] for g in groups}) == len(groups)
    for group in groups:
        assert group["template"]["spec"]["containers"], group["groupName"]
        # with autoscaling off, KubeRay requires both bounds
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]


def test_kuberay_ray_start_params_are_all_strings():
    spec = raycluster()["spec"]
    for params in [spec["headGroupSpec"]["rayStartParams"], *(g["rayStartParams"] for g in spec["workerGroupSpecs"])]:
        assert params
        for key, value in params.items():
            assert isinstance(key, str) and isinstance(value, str), f"{key}: {value!r}"


def test_kuberay_head_has_num_cpus_and_no_benchmark_slot_and_each_worker_group_one():
    spec = raycluster()["spec"]
    head = spec["headGroupSpec"]["rayStartParams"]
    assert int(head["num-cpus"]) >= 1
    assert kuberay_resources(head) == {BENCH_RESOURCE: 0}
    for group in spec["workerGroupSpecs"]:
        assert kuberay_resources(group["rayStartParams"]) == {BENCH_RESOURCE: 1}, group["groupName"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        # KubeRay rejects resources set both in rayStartParams and at the group's top level
        assert "resources" not in group


def test_kuberay_worker_groups_carry_valid_labels_in_the_top_level_field_kuberay_reads():
    from ray._private.label_utils import validate_node_label_syntax

    for group in raycluster()["spec"]["workerGroupSpecs"]:
        # KubeRay 1.5+ refuses rayStartParams['labels']; the group's `labels` become Ray's
        assert "labels" not in group["rayStartParams"]
        labels = group["labels"]
        validate_node_label_syntax(labels)
        assert labels["hwm-node-type"] == group["groupName"]
        assert not PROBE_OWNED_LABELS & labels.keys()


def test_kuberay_every_container_reads_the_token_from_a_mounted_secret_file():
    token_dir, token_file = os.path.split(TOKEN_PATH)
    for group, pod in pod_specs(raycluster()).items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["RAY_AUTH_MODE"] == "token", group
            assert env["RAY_AUTH_TOKEN_PATH"] == TOKEN_PATH, group
            (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == token_dir]
            assert mount.get("readOnly") is True, group
            secret = volumes[mount["name"]]["secret"]
            assert secret["secretName"]
            assert [i["path"] for i in secret["items"]] == [token_file], group
            assert secret["defaultMode"] & 0o007 == 0, f"{group}: the token file is world-readable"


def test_kuberay_workers_run_agent_join_in_the_foreground_and_the_head_runs_kuberays_ray_start():
    cluster = raycluster()
    # without this annotation KubeRay would replace the command with its own `ray start`
    assert cluster["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    pods = pod_specs(cluster)
    (head,) = pods.pop("head")["containers"]
    assert "$KUBERAY_GEN_RAY_START_CMD" in " ".join(head["args"])
    for group, pod in pods.items():
        (container,) = pod["containers"]
        (command,) = container["args"]
        args = parse_join(step(command, is_hwmatrix))
        assert args.block, f"{group}: the container lives as long as the agent"
        assert args.token_file == TOKEN_PATH
        # KubeRay sets FQ_RAY_IP and RAY_PORT in every worker container
        check_address(Template(args.address).substitute(FQ_RAY_IP="hwmatrix-head-svc.default.svc.cluster.local",
                                                        RAY_PORT="6379"))


def test_kuberay_gpu_worker_group_requests_nvidia_gpus_and_says_how_many_in_its_labels():
    groups = raycluster()["spec"]["workerGroupSpecs"]
    gpus = {g["groupName"]: int(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0))
            for g in groups}
    assert any(count >= 1 for count in gpus.values()), "one worker group is a GPU group"
    for group in groups:
        assert group["labels"]["hwm-gpus"] == str(gpus[group["groupName"]]), group["groupName"]


# ---------------------------------------------------------------- systemd

def test_systemd_unit_has_unit_service_and_install_sections():
    unit = agent_unit()
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit["Unit"]["After"]


def test_systemd_unit_runs_agent_join_in_the_foreground_with_the_token_file():
    unit = agent_unit()
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert Path(argv[0]).is_absolute()
    args = parse_join(argv)
    assert args.block, "systemd supervises the process: it must not daemonize"
    assert args.token_file == TOKEN_PATH
    check_address(Template(args.address).substitute(HWMATRIX_HEAD="10.0.0.5:6379"))
    assert unit["Service"]["EnvironmentFile"] == "/etc/hwmatrix/agent.env"


def test_systemd_unit_runs_as_an_unprivileged_user():
    user = agent_unit()["Service"].get("User", "")
    assert user and user not in {"root", "0"}


def test_systemd_unit_restarts_on_failure_and_takes_every_engine_down_with_it():
    service = agent_unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert service["KillMode"] == "control-group"


def test_systemd_unit_environment_turns_token_auth_on_and_finds_ray_next_to_hwmatrix():
    unit = agent_unit()
    env = unit_environment(unit)
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN_PATH"] == TOKEN_PATH
    # `agent join` runs `ray` from PATH: it must be the venv's, the one hwmatrix came from
    venv_bin = str(Path(shlex.split(unit["Service"]["ExecStart"])[0]).parent)
    assert env["PATH"].split(":")[0] == venv_bin


def test_systemd_unit_is_hardened_yet_can_write_its_cache_and_spool():
    unit = agent_unit()
    service = unit["Service"]
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["PrivateTmp"] == "yes"
    writable = [Path(p) for p in service["ReadWritePaths"].split()]
    env = unit_environment(unit)
    for key in ("HWMATRIX_CACHE", "HWMATRIX_SPOOL", "HOME"):
        path = Path(env[key])
        assert any(path == w or w in path.parents for w in writable), f"{key}={path} is read-only under ProtectSystem"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_accepts_the_unit(tmp_path):
    unit = tmp_path / "hwmatrix-agent.service"
    shutil.copy(INFRA / "hwmatrix-agent.service", unit)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                            capture_output=True, text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if unit.name in line and "is not executable" not in line]   # the venv is not installed here
    assert not complaints, complaints
