"""Volunteers: the HTTPS work API on 127.0.0.1, real agent processes, real builds in the
sandbox, records in a real S3 server (SeaweedFS) through presigned URLs."""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.volunteer.workclient import ApiError, WorkClient
from tests.conftest import REPO, hwmatrix, two_ref_matrix, wait_for
from tests.workapi_helper import PROFILE, TERMS, ServedWorkApi

POLICY = """repos: [pypi:llama-cpp-python]
allow_fork_prs: false
gpus: 0
idle: {max_load_per_core: null, pause_when_users_logged_in: false}
"""


def _matrix(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n" + body)
    return str(path)


def tiny_matrix(tmp_path: Path, name: str = "vol", reps: int = 3) -> str:
    """One cell: llama.cpp v0.3.36 from the registry sdist, the tiny model as Q8_0."""
    return two_ref_matrix(tmp_path, name, reps=reps, refs=("B",))


class WorkApiServer(ServedWorkApi):
    """`hwmatrix volunteers serve` as a subprocess, with its own ledger and a SeaweedFS store."""

    def __init__(self, tmp_path: Path, seaweed, lease_s: float = 6, replicate: float = 0.0):
        self.store_url = f"s3://{seaweed.bucket}/vol-{secrets.token_hex(5)}"
        self.env = {**os.environ, **seaweed.env()}
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
            self.env.pop(name, None)
        self.seaweed = seaweed
        super().__init__(tmp_path, "--lease-s", str(lease_s), "--replicate", str(replicate), env=self.env)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "coordinator.cli", "volunteers", *args, "--state", str(self.state)],
                              cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)

    def invite(self, approved: bool = True, expires_h: float = 1.0) -> str:
        done = self.cli("invite", "--expires-h", str(expires_h), *(["--approved"] if approved else []))
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def client(self, key: str | None = None) -> WorkClient:
        return WorkClient(self.url, key, self.ca)

    def enroll(self, name: str = "donor", profile: dict = PROFILE) -> dict:
        return self.client().call("enroll", {"code": self.invite(), "name": name, "profile": profile})

    def queue(self, matrix: str, *extra: str) -> str:
        run_id = f"run-{secrets.token_hex(3)}"
        done = self.cli("queue", matrix, "--store", self.store_url, "--run-id", run_id, *extra)
        assert done.returncode == 0, done.stderr
        return run_id

    def listing(self) -> dict:
        done = self.cli("list", "--format", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def output(self) -> str:
        return self.log()[-4000:]

    def records(self, run_id: str) -> list[dict]:
        client = self.seaweed.client()
        prefix = self.store_url.split("/", 3)[3] + f"/runs/{run_id}/results/"
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=self.seaweed.bucket, Prefix=prefix).get("Contents", [])]
        return [json.loads(client.get_object(Bucket=self.seaweed.bucket, Key=k)["Body"].read()) for k in keys]


@pytest.fixture
def work_api(seaweed, tmp_path):
    server = WorkApiServer(tmp_path, seaweed)
    yield server
    server.close()


class Agent:
    """A real `hwmatrix agent volunteer` process without any store credentials."""

    def __init__(self, server: WorkApiServer, tmp_path: Path, name: str, code: str | None, *extra: str,
                 policy: str = POLICY):
        self.state = tmp_path / f"agent-{name}"
        self.state.mkdir(exist_ok=True)
        (self.state / "policy.yaml").write_text(policy)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["HWMATRIX_SPOOL"] = str(self.state / "spool")
        self.log_path = self.state / "agent.log"
        argv = [sys.executable, "-m", "coordinator.cli", "agent", "volunteer", "--coordinator", server.url,
                "--policy", str(self.state / "policy.yaml"), "--ca-cert", server.ca, "--state", str(self.state),
                "--name", name, "--poll-s", "1", *extra] + (["--code", code] if code else [])
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def creds(self) -> dict:
        path = self.state / "credentials.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def output(self) -> str:
        return self.log_path.read_text()[-4000:]

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"agent still running after {timeout} s:\n{self.output()}")

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


# ---------------------------------------------------------------- enrollment and keys

def test_enrollment_code_works_once_and_unknown_or_expired_codes_are_refused(work_api):
    code = work_api.invite()
    first = work_api.client().call("enroll", {"code": code, "name": "a", "profile": PROFILE})
    assert first["key"].startswith("hwmk_") and first["fingerprint"].startswith("sha256:")
    with pytest.raises(ApiError, match="already used") as again:
        work_api.client().call("enroll", {"code": code, "name": "b", "profile": PROFILE})
    assert again.value.status == 403
    with pytest.raises(ApiError, match="unknown enrollment code"):
        work_api.client().call("enroll", {"code": "AAAA-BBBB-CCCC-DDDD", "name": "c", "profile": PROFILE})
    short = work_api.invite(expires_h=0.5 / 3600)
    time.sleep(1.5)
    with pytest.raises(ApiError, match="expired"):
        work_api.client().call("enroll", {"code": short, "name": "d", "profile": PROFILE})
    agents = work_api.listing()["agents"]
    assert [a["name"] for a in agents] == ["a"]
    stored = (work_api.state / "volunteers.sqlite").read_bytes()
    assert first["key"].encode() not in stored and code.encode() not in stored     # kept hashed only
    assert first["key"] not in work_api.output() and code not in work_api.output()  # nor logged


def test_wrong_revoked_and_expired_keys_are_refused_and_pending_agents_wait(work_api):
    from coordinator.volunteers.ledger import Ledger

    good = work_api.enroll("good")
    assert work_api.client(good["key"]).call("lease", {"profile": PROFILE, "terms": TERMS})["lease"] is None
    with pytest.raises(ApiError, match="unknown key") as wrong:
        work_api.client("hwmk_" + secrets.token_urlsafe(32)).call("lease", {})
    assert wrong.value.status == 401
    with pytest.raises(ApiError, match="no key"):
        work_api.client(None).call("lease", {})

    revoked = work_api.cli("revoke", good["agent_id"])
    assert revoked.returncode == 0, revoked.stderr
    with pytest.raises(ApiError, match="revoked") as refused:
        work_api.client(good["key"]).call("lease", {"profile": PROFILE, "terms": TERMS})
    assert refused.value.status == 401

    Ledger(work_api.state).configure(key_ttl_s=1)          # keys made from now on live 1 s
    short = work_api.enroll("short-lived")
    time.sleep(1.5)
    with pytest.raises(ApiError, match="expired"):
        work_api.client(short["key"]).call("lease", {})

    Ledger(work_api.state).configure(key_ttl_s=3600)
    pending = work_api.client().call("enroll", {"code": work_api.invite(approved=False), "name": "p",
                                                "profile": PROFILE})
    assert pending["state"] == "pending"
    with pytest.raises(ApiError, match="awaiting approval") as waiting:
        work_api.client(pending["key"]).call("lease", {})
    assert waiting.value.status == 403
    assert work_api.cli("approve", pending["agent_id"]).returncode == 0
    assert work_api.client(pending["key"]).call("lease", {"profile": PROFILE, "terms": TERMS})["lease"] is None


def test_certificate_is_verified_and_plain_http_is_refused(work_api):
    with pytest.raises(ApiError, match="certificate not trusted"):
        WorkClient(work_api.url).call("enroll", {"code": "x"})       # system roots don't know the self-signed cert
    with pytest.raises(ApiError, match="https"):
        WorkClient(work_api.url.replace("https://", "http://"))


def test_key_rotation_keeps_the_old_key_working_for_the_grace_period_only(work_api):
    from coordinator.volunteers.ledger import Ledger

    Ledger(work_api.state).configure(grace_s=2)
    agent = work_api.enroll("rotor")
    new = work_api.client(agent["key"]).call("rotate")
    assert new["key"] != agent["key"] and new["fingerprint"] != agent["fingerprint"]
    work_api.client(agent["key"]).call("lease", {"profile": PROFILE, "terms": TERMS})     # still fine in grace
    work_api.client(new["key"]).call("lease", {"profile": PROFILE, "terms": TERMS})
    time.sleep(2.5)
    with pytest.raises(ApiError, match="replaced by a newer"):
        work_api.client(agent["key"]).call("lease", {})
    work_api.client(new["key"]).call("lease", {"profile": PROFILE, "terms": TERMS})


def test_revoked_agent_process_is_refused_at_its_next_call_and_stops(work_api, tmp_path):
    agent = Agent(work_api, tmp_path, "soon-revoked", work_api.invite())
    creds = wait_for(agent.creds, 60, 0.5)
    assert creds, agent.output()
    assert work_api.cli("revoke", creds["agent_id"]).returncode == 0
    assert agent.wait(60) == 2
    assert "refused this agent's key" in agent.output()
    assert "Traceback" not in agent.output()


# ---------------------------------------------------------------- the owner's terms

def test_gpu_fork_pr_and_disallowed_repo_cells_are_not_leased_against_the_terms(work_api, tmp_path):
    gpu = work_api.queue(_matrix(tmp_path, "gpu", """engines:
  mainline: {kind: llama.cpp, sdist: {package: llama-cpp-python, versions: ["0.3.36"]}}
models: {tiny: {generate: tiny-llama}}
matrix: {ref: [{name: B, engine: mainline, tag: v0.3.36}], gpus: [1]}
"""))
    fork = work_api.queue(_matrix(tmp_path, "fork", """engines:
  mainline: {kind: llama.cpp, sdist: {package: llama-cpp-python, versions: ["0.3.36"]}}
models: {tiny: {generate: tiny-llama}}
matrix: {ref: [{name: P, engine: mainline, pr: 517}]}
"""))
    other = work_api.queue(_matrix(tmp_path, "other", """engines:
  theirs: {kind: llama.cpp, repo: "https://example.com/someone/llama.cpp"}
models: {tiny: {generate: tiny-llama}}
matrix: {ref: [{name: X, engine: theirs, branch: main}]}
"""))
    gpu_box = {**PROFILE, "gpus": {"count": 2, "devices": []}}
    client = work_api.client(work_api.enroll("gpu-box", gpu_box)["key"])
    assert client.call("lease", {"profile": gpu_box, "terms": TERMS})["lease"] is None
    # the same box whose owner allows GPUs, fork PRs and the other repo gets each of them
    leased = set()
    for terms in ({**TERMS, "max_gpus": 2}, {**TERMS, "allow_fork_prs": True},
                  {**TERMS, "repos": ["https://example.com/someone/llama.cpp"]}):
        answer = client.call("lease", {"profile": gpu_box, "terms": terms})
        assert answer["lease"], terms
        leased.add(answer["spec"]["run_id"])
    assert leased == {gpu, fork, other}


def test_agent_declines_a_cell_its_policy_forbids_without_fetching_it(work_api, tmp_path, monkeypatch):
    """A coordinator that ignores our terms still gets the cell back, unfetched."""
    from agent.engine import sources
    from agent.volunteer.loop import Volunteer

    forbidden = tmp_path / "forbidden.git"
    subprocess.run(["git", "init", "-q", "--bare", str(forbidden)], check=True)
    run_id = work_api.queue(_matrix(tmp_path, "forbidden", f"""engines:
  theirs: {{kind: llama.cpp, repo: "file://{forbidden}"}}
models: {{tiny: {{generate: tiny-llama}}}}
matrix: {{ref: [{{name: X, engine: theirs, branch: main}}]}}
"""))
    creds = work_api.enroll("careful")
    client = work_api.client(creds["key"])
    answer = client.call("lease", {"profile": PROFILE, "terms": {**TERMS, "repos": [f"file://{forbidden}"]}})
    assert answer["spec"]["run_id"] == run_id
    fetched = []
    monkeypatch.setattr(sources, "resolve_git", lambda *a, **k: fetched.append(a))
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    volunteer = Volunteer(work_api.url, str(policy), tmp_path / "vstate", work_api.ca)
    assert volunteer.work(client, creds, answer) is False
    assert fetched == []
    claim = next(c for c in work_api.listing()["claims"] if c["run_id"] == run_id)
    assert claim["state"] == "queued" and "owner policy" in claim["reason"] and creds["agent_id"] in claim["not_agent"]
    # and it is not offered to this agent again
    assert client.call("lease", {"profile": PROFILE, "terms": {**TERMS, "repos": [f"file://{forbidden}"]}})["lease"] is None


# ---------------------------------------------------------------- real agents, real builds

@pytest.mark.engines
def test_killed_agents_lease_goes_to_another_agent_and_the_cell_is_recorded_once(work_api, tmp_path):
    run_id = work_api.queue(tiny_matrix(tmp_path))
    first = Agent(work_api, tmp_path, "first", work_api.invite())

    def leased():
        return next((c for c in work_api.listing()["claims"] if c["run_id"] == run_id and c["state"] == "leased"), None)
    claim = wait_for(leased, 120, 0.5)
    assert claim, first.output() + work_api.output()
    first.kill()                                                   # kill -9, mid-build or mid-run
    first_id = first.creds()["agent_id"]
    assert claim["agent_id"] == first_id

    second = Agent(work_api, tmp_path, "second", work_api.invite(), "--max-cells", "1")
    assert second.wait(1800) == 0, second.output()
    records = work_api.records(run_id)
    creds = second.creds()
    assert len(records) == 1, [r["agent_id"] for r in records]
    record = records[0]
    assert record["status"] == "ok", record.get("error")
    assert record["agent_id"] == creds["agent_id"] and record["agent_key_fingerprint"] == creds["fingerprint"]
    assert record["metrics"] and all(len(m["samples"]) == 3 for m in record["metrics"].values())
    assert "AWS" not in json.dumps(record) and creds["key"] not in json.dumps(record)
    assert creds["key"] not in second.output() + work_api.output()
    assert oct((second.state / "credentials.json").stat().st_mode & 0o777) == "0o600"
    claims = [c for c in work_api.listing()["claims"] if c["run_id"] == run_id]
    assert [(c["state"], c["agent_id"], c["attempts"]) for c in claims] == [("done", creds["agent_id"], 2)]
    assert record["engine"]["sandboxed"] is True and "/sandboxed/builds/" in record["tool"]["argv"][0][0]


@pytest.mark.engines
def test_replicated_cell_is_cross_checked_and_the_report_shows_the_check(seaweed, tmp_path):
    server = WorkApiServer(tmp_path, seaweed, lease_s=30, replicate=1.0)
    try:
        run_id = server.queue(tiny_matrix(tmp_path, "replicated", reps=4))
        one = Agent(server, tmp_path, "one", server.invite(), "--max-cells", "1")
        assert one.wait(1800) == 0, one.output()
        two = Agent(server, tmp_path, "two", server.invite(), "--max-cells", "1")
        assert two.wait(1800) == 0, two.output()
        records = server.records(run_id)
        assert sorted(r["agent_id"] for r in records) == sorted([one.creds()["agent_id"], two.creds()["agent_id"]])
        assert len({r["agent_key_fingerprint"] for r in records}) == 2
        checks = server.listing()["checks"]
        assert len(checks) == 1 and checks[0]["verdict"] in ("agree", "disagree", "unknown"), checks
        assert sorted(json.loads(checks[0]["agents"])) == sorted(r["agent_id"] for r in records)
        report = hwmatrix("report", "--store", server.store_url, "--run", run_id, env=server.env)
        assert report.returncode == 0, report.stderr
        assert "Cross-check" in report.stdout, report.stdout[-2000:]
    finally:
        server.close()


# ---------------------------------------------------------------- attacks on the API

def _raw(server: WorkApiServer, data: bytes, path: str = "/v1/lease", headers: dict | None = None) -> tuple[int, dict]:
    import http.client
    import ssl

    conn = http.client.HTTPSConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=30,
                                       context=ssl.create_default_context(cafile=server.ca))
    conn.request("POST", path, body=data, headers=headers or {})
    answer = conn.getresponse()
    return answer.status, json.loads(answer.read() or b"{}")


def test_malformed_requests_get_clear_refusals_and_a_silent_client_blocks_nobody(work_api):
    import socket

    assert _raw(work_api, b"{}", headers={"Content-Length": str(2 << 20)})[0] == 413     # refused unread
    assert _raw(work_api, b"{not json", path="/v1/enroll")[0] == 400
    assert _raw(work_api, b"[1, 2]", path="/v1/enroll")[0] == 400
    assert _raw(work_api, b"{}", path="/v1/../admin")[0] == 404
    assert _raw(work_api, b"{}", headers={"Authorization": "Bearer ' OR 1=1 --"})[0] == 401
    assert _raw(work_api, b"{}", headers={"Authorization": "Basic YWRtaW46YWRtaW4="})[0] == 401
    silent = socket.create_connection(("127.0.0.1", int(work_api.url.rsplit(":", 1)[1])))   # never says hello
    try:
        with pytest.raises(ApiError, match="unknown enrollment code"):
            work_api.client().call("enroll", {"code": "nope"})
    finally:
        silent.close()
    assert work_api.proc.poll() is None


def test_a_lease_grants_uploads_only_for_its_own_cell_and_agent_and_records_must_be_attributed(work_api, tmp_path):
    from agent.store.keys import sha256_b64
    from agent.store.keys import result_key
    from agent.store.upload import put_url

    run_id = work_api.queue(tiny_matrix(tmp_path))
    alice, mallory = work_api.enroll("alice"), work_api.enroll("mallory")
    a, m = work_api.client(alice["key"]), work_api.client(mallory["key"])
    lease = a.call("lease", {"profile": PROFILE, "terms": TERMS})
    cell = lease["spec"]["cell_id"]
    own = result_key(run_id, cell, alice["agent_id"])

    def ask(client, key, lease_id=lease["lease"]):
        return client.call("grant", {"lease": lease_id, "items": [{"key": key, "sha256": sha256_b64(b"{}"),
                                                                   "size": 2, "kind": "record"}]})["answers"][0]
    assert "url" in ask(a, own)
    assert "refused" in ask(a, result_key(run_id, cell, mallory["agent_id"]))     # another agent's key
    assert "refused" in ask(a, result_key("other-run", cell, alice["agent_id"]))
    assert "refused" in ask(a, f"runs/{run_id}/manifest.json")
    assert "refused" in ask(a, f"runs/{run_id}/results/{cell}/../../../catalog.json")
    with pytest.raises(ApiError, match="no such lease") as stolen:
        ask(m, result_key(run_id, cell, mallory["agent_id"]))                      # mallory uses alice's lease
    assert stolen.value.status == 410
    with pytest.raises(ApiError, match="no record"):
        a.call("complete", {"lease": lease["lease"]})

    forged = json.dumps({"run_id": run_id, "cell_id": cell, "agent_id": alice["agent_id"], "status": "ok",
                         "agent_key_fingerprint": mallory["fingerprint"]}).encode()
    grant = a.call("grant", {"lease": lease["lease"], "items": [{"key": own, "sha256": sha256_b64(forged),
                                                                 "size": len(forged), "kind": "record"}]})
    status, _ = put_url(grant["answers"][0]["url"], grant["answers"][0]["headers"], forged)
    assert status == 200
    with pytest.raises(ApiError, match="key fingerprint") as unattributed:
        a.call("complete", {"lease": lease["lease"]})
    assert unattributed.value.status == 422
    claim = next(c for c in work_api.listing()["claims"] if c["run_id"] == run_id)
    assert claim["state"] == "queued" and alice["agent_id"] in claim["not_agent"]     # measured again elsewhere


def test_models_by_path_are_never_queued_for_volunteers_nor_run_by_them(work_api, tmp_path):
    from agent.volunteer.loop import Volunteer

    done = work_api.cli("queue", _matrix(tmp_path, "bypath", """engines:
  mainline: {kind: llama.cpp, sdist: {package: llama-cpp-python, versions: ["0.3.36"]}}
models: {mine: {path: /models/secret.gguf}}
matrix: {ref: [{name: B, engine: mainline, tag: v0.3.36}]}
"""), "--store", work_api.store_url)
    assert done.returncode == 2 and "volunteers run only generated models" in done.stderr, done.stderr
    assert work_api.listing()["claims"] == []

    work_api.queue(tiny_matrix(tmp_path))
    creds = work_api.enroll("careful")
    client = work_api.client(creds["key"])
    answer = client.call("lease", {"profile": PROFILE, "terms": TERMS})
    answer["spec"]["model"] = {"name": "tiny", "path": "/etc/shadow"}      # a coordinator gone bad
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    assert Volunteer(work_api.url, str(policy), tmp_path / "vstate", work_api.ca).work(client, creds, answer) is False
    claim = work_api.listing()["claims"][0]
    assert claim["state"] == "queued" and "only generated models" in claim["reason"]


def test_an_agents_track_record_sets_how_often_its_cells_are_rechecked(tmp_path):
    from coordinator.volunteers.ledger import Caller, Ledger

    ledger = Ledger(tmp_path / "ledger")
    ids = [ledger.enroll(ledger.invite(approved=True), name, PROFILE)[0] for name in ("steady", "odd", "new")]
    for n in range(6):
        ledger.note_check("r", f"c{n}", "k", [ids[0]], "agree", "")
    ledger.note_check("r", "c9", "k", [ids[1]], "disagree", "tg 30% apart")
    steady, odd, new = (ledger.recheck_rate(i, 0.25) for i in ids[:2] + [ids[2]])
    assert steady < new == pytest.approx(0.25, abs=0.05) and odd == 1.0
    # the rate decides whether a finished cell gets a replica: a low base rate does not spare
    # an agent that disagreed, and a zero base rate replicates nothing
    for agent, base, replicated in ((ids[1], 0.02, True), (ids[0], 0.0, False)):
        ledger.queue("run", f"cell-{agent}", {"cell_id": "x"}, {"hardware": None, "gpus": None}, "s3://b/p", None)
        caller = Caller(agent, "fp", False)
        lease = ledger.lease(caller, "k", lambda cell: cell["cell_id"] == f"cell-{agent}", 60)
        done = ledger.finish(caller, lease["lease_id"], "ok", base_replicate=base)
        assert (done["replica_rate"] is not None) is replicated
    replicas = [c for c in ledger.claims() if c["role"] == "replica"]
    assert [(c["cell_id"], c["not_agent"]) for c in replicas] == [(f"cell-{ids[1]}", ids[1])]


def test_without_fork_prs_a_commit_only_on_a_pull_request_ref_is_refused(tmp_path, monkeypatch):
    """Fork code must not slip in as a bare commit id that an earlier PR fetch left in the mirror."""
    from agent.engine.gitutil import git
    from agent.engine.sources import SourceError, published_commits_only, resolve_git

    monkeypatch.setenv("HWMATRIX_CACHE", str(tmp_path / "cache"))
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    git("init", "--quiet", "-b", "main", cwd=upstream)
    for name in ("main", "fork"):
        (upstream / name).write_text(name)
        git("add", name, cwd=upstream)
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", name, cwd=upstream)
    fork = git("rev-parse", "HEAD", cwd=upstream)
    git("update-ref", "refs/pull/1/head", fork, cwd=upstream)
    git("reset", "--quiet", "--hard", "HEAD~1", cwd=upstream)
    main = git("rev-parse", "HEAD", cwd=upstream)
    resolve_git(str(upstream), "pr", "1")                   # the mirror now holds the fork commit
    assert resolve_git(str(upstream), "commit", fork).commit == fork
    with published_commits_only():
        assert resolve_git(str(upstream), "commit", main).commit == main
        with pytest.raises(SourceError, match="no branch or tag"):
            resolve_git(str(upstream), "commit", fork)


def test_an_agent_outside_its_owners_window_or_on_a_busy_machine_takes_no_work(work_api, tmp_path):
    from datetime import datetime, timedelta

    run_id = work_api.queue(tiny_matrix(tmp_path))
    later = datetime.now() + timedelta(hours=3)
    window = f"{later:%H}:00-{(later + timedelta(hours=1)):%H}:00"
    for name, extra in (("night-owl", f"windows: ['{window}']\n"),
                        ("busy", "idle: {max_load_per_core: 0.0, pause_when_users_logged_in: false}\n")):
        policy = POLICY.replace("idle: {max_load_per_core: null, pause_when_users_logged_in: false}\n", "") + extra
        agent = Agent(work_api, tmp_path, name, work_api.invite(), policy=policy)
        said = wait_for(lambda: "paused:" in agent.output() and agent.output(), 60, 0.5)
        time.sleep(3)
        agent.kill()
        assert said, agent.output()
        assert ("outside the owner's windows" if name == "night-owl" else "load ") in said
        assert not [c for c in work_api.listing()["claims"] if c["run_id"] == run_id], "it leased a cell"


def test_an_agent_told_its_key_is_old_rotates_it_and_goes_on_with_the_new_one(work_api, tmp_path):
    from coordinator.volunteers.ledger import Ledger

    Ledger(work_api.state).configure(rotate_after_s=0)        # every key is "old"
    agent = Agent(work_api, tmp_path, "rotor", work_api.invite(), "--exit-when-idle")
    assert agent.wait(120) == 0, agent.output()
    creds = agent.creds()
    assert "rotated the key" in agent.output()
    listed = next(a for a in work_api.listing()["agents"] if a["agent_id"] == creds["agent_id"])
    assert creds["fingerprint"] in listed["keys"] and len(listed["keys"]) == 2     # old one still in its grace
    work_api.client(creds["key"]).call("lease", {"profile": listed["profile"], "terms": TERMS})
