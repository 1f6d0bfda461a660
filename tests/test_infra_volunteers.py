"""The systemd units for volunteers (infra/hwmatrix-volunteer.service on a donor,
infra/hwmatrix-workapi.service on the coordinator) checked against the hwmatrix CLI and systemd."""
from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from string import Template

import pytest

from coordinator.cli.main import build_parser
from tests.conftest import REPO

INFRA = REPO / "infra"
UNITS = ("hwmatrix-volunteer.service", "hwmatrix-workapi.service")


def unit(name: str) -> configparser.ConfigParser:
    parsed = configparser.ConfigParser(strict=False, interpolation=None)
    parsed.optionxform = str
    parsed.read(INFRA / name)
    return parsed


def exec_args(name: str, **env: str):
    """The CLI's reading of the unit's ExecStart, with its ${VARS} filled in."""
    argv = shlex.split(Template(unit(name)["Service"]["ExecStart"]).substitute(env))
    assert argv[0].endswith("/hwmatrix"), argv
    return build_parser().parse_args(argv[1:])


def test_volunteer_unit_runs_agent_volunteer_with_the_owners_policy_and_no_enrollment_code():
    args = exec_args("hwmatrix-volunteer.service", HWMATRIX_COORDINATOR="https://coord.example:8443",
                     HWMATRIX_CA="--ca-cert /etc/hwmatrix/coordinator.pem")
    assert (args.command, args.agent_command) == ("agent", "volunteer")
    assert args.policy == "/etc/hwmatrix/policy.yaml" and args.ca_cert == "/etc/hwmatrix/coordinator.pem"
    assert args.code is None, "a one-time code is used once by hand, never kept in a unit"
    assert exec_args("hwmatrix-volunteer.service", HWMATRIX_COORDINATOR="https://c:1", HWMATRIX_CA="").ca_cert is None


def test_volunteer_unit_stops_on_a_refusal_and_leaves_bubblewrap_its_namespaces():
    service = unit("hwmatrix-volunteer.service")["Service"]
    assert service["User"] not in ("root", "0") and service["RestartPreventExitStatus"] == "2"
    assert "RestrictNamespaces" not in service, "bubblewrap needs user, mount, pid and net namespaces"
    assert service["ProtectHome"] == "yes" and service["NoNewPrivileges"] == "yes"
    state = shlex.split(service["ExecStart"])[shlex.split(service["ExecStart"]).index("--state") + 1]
    assert any(state.startswith(p) for p in service["ReadWritePaths"].split())


def test_workapi_unit_serves_https_with_the_given_certificate_from_a_locked_down_service():
    args = exec_args("hwmatrix-workapi.service")
    assert (args.command, args.volunteers_command) == ("volunteers", "serve")
    assert args.cert and args.key and args.host == "0.0.0.0"
    service = unit("hwmatrix-workapi.service")["Service"]
    assert service["User"] not in ("root", "0") and service["RestrictNamespaces"] == "yes"
    assert any(args.state.startswith(p) for p in service["ReadWritePaths"].split())


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
@pytest.mark.parametrize("name", UNITS)
def test_systemd_accepts_the_volunteer_units(tmp_path, name):
    path = tmp_path / name
    shutil.copy(INFRA / name, path)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)],
                            capture_output=True, text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if name in line and "is not executable" not in line]
    assert not complaints, complaints
