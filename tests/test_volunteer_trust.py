"""The work API trusts nothing a volunteer sends: records are checked against their lease
and cell spec before a lease closes, the hardware class is the enrolled one, and names,
reasons and profiles with control characters are refused. Real server on 127.0.0.1, real
SeaweedFS, records uploaded through the real presigned grant path (hand-made, so no engine
has to be built)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agent.volunteer.workclient import ApiError
from tests.conftest import REPO, wait_for
from tests.test_volunteers import PROFILE, TERMS, Agent, WorkApiServer, tiny_matrix, work_api  # noqa: F401

pytestmark = pytest.mark.timeout(180)

OTHER = {**PROFILE, "hardware_class": "test-class-0002"}
THIRD = {**PROFILE, "hardware_class": "test-class-0003"}


def make_record(spec: dict, agent: dict, hw_class: str = PROFILE["hardware_class"],
                samples: tuple = (100.0, 101.5, 99.0)) -> dict:
    """What the pipeline writes for an ok cell of ``spec`` (one engine process)."""
    from agent.engine import tools
    from agent.spec.cellspec import CellSpec
    from agent.spec.record import Metric, ResultRecord
    from agent.engine.sources import sdist_repo_id
    from agent.store.keys import log_key

    cell = CellSpec.model_validate(spec)
    argv = tools.invocation(cell, f"/home/donor/.cache/hwmatrix/sandboxed/builds/k/bin/{cell.tool}",
                              "/home/donor/.cache/hwmatrix/models/tiny-Q8_0.gguf", len(samples))
    repo_id = sdist_repo_id(cell.engine.sdist.package, list(cell.engine.sdist.versions))
    commit = "0c1e57098" + "a" * 31
    # the cell's own build quantized the model (one ref: it is the quantizing build)
    quantized_by = {"engine": cell.engine.name, "kind": cell.engine.kind, "source": cell.engine.source(),
                    "ref": cell.ref.model_dump(), "cmake": list(cell.engine.cmake), "repo_id": repo_id,
                    "commit": commit, "build_digest": "d" * 20, "binary_hash": "e" * 64}
    record = ResultRecord(
        run_id=cell.run_id, matrix={"name": cell.matrix_name, "hash": cell.matrix_hash}, cell_id=cell.cell_id,
        agent_id=agent["agent_id"], agent_key_fingerprint=agent["fingerprint"], params=cell.params, status="ok",
        engine={"name": cell.engine.name, "kind": cell.engine.kind, "source": cell.engine.source(),
                "ref": cell.ref.model_dump(), "cmake": list(cell.engine.cmake), "build_flags": list(cell.engine.cmake),
                "repo_id": repo_id, "commit": commit, "sandboxed": True},
        model={"name": cell.model.name, "quant": cell.quant, "quantized_by": quantized_by},
        tool={"name": cell.tool, "argv": [argv], "exit_codes": [0], "wall_s": [0.5], "started": ["x"]},
        hardware={**PROFILE, "hardware_class": hw_class}, hardware_class=hw_class,
        metrics={"pp_tps": Metric.from_samples("pp16", list(samples), process_sizes=[len(samples)]),
                 "tg_tps": Metric.from_samples("tg4", [s / 10 for s in samples], process_sizes=[len(samples)])},
        logs={"stdout.txt": log_key(cell.run_id, cell.cell_id, agent["agent_id"], "stdout.txt")})
    return record.model_dump(mode="json")


def upload(client, lease: str, key: str, blob: bytes) -> None:
    from agent.store.keys import sha256_b64
    from agent.store.upload import put_url

    answer = client.call("grant", {"lease": lease, "items": [{"key": key, "sha256": sha256_b64(blob),
                                                              "size": len(blob), "kind": "record"}]})["answers"][0]
    assert "url" in answer, answer
    assert put_url(answer["url"], answer["headers"], blob)[0] == 200


def deliver(server, agent: dict, record: dict | bytes, profile: dict = PROFILE) -> tuple[dict, dict]:
    """Lease a cell, upload ``record`` (a dict, or the bytes as they are) as its result, complete.
    Returns (the lease answer, the complete answer or {"status", "error"})."""
    from agent.store.keys import result_key

    client = server.client(agent["key"])
    lease = client.call("lease", {"profile": profile, "terms": TERMS})
    assert lease["lease"], lease
    spec = lease["spec"]
    blob = record if isinstance(record, bytes) else json.dumps(record(spec) if callable(record) else record).encode()
    upload(client, lease["lease"], result_key(spec["run_id"], spec["cell_id"], agent["agent_id"]), blob)
    try:
        return lease, client.call("complete", {"lease": lease["lease"]})
    except ApiError as exc:
        return lease, {"status": exc.status, "error": str(exc)}


def agent_row(server, agent_id: str) -> dict:
    return next(a for a in server.listing()["agents"] if a["agent_id"] == agent_id)


# ---------------------------------------------------------------- records

def test_a_record_of_only_an_id_and_a_fingerprint_is_refused_and_the_cell_is_offered_again(work_api, tmp_path):
    run_id = work_api.queue(tiny_matrix(tmp_path))
    alice, bob = work_api.enroll("alice"), work_api.enroll("bob")
    bare = {"agent_id": alice["agent_id"], "agent_key_fingerprint": alice["fingerprint"], "status": "ok"}
    lease, answer = deliver(work_api, alice, bare)
    assert answer.get("status") == 422 and "record refused" in answer["error"], answer
    assert "\n" not in answer["error"]
    claim = next(c for c in work_api.listing()["claims"] if c["run_id"] == run_id)
    assert claim["state"] == "queued" and alice["agent_id"] in claim["not_agent"]
    assert agent_row(work_api, alice["agent_id"])["disagreed"] == 1
    stored = {r.get("agent_id", "-"): r for r in work_api.records(run_id)}
    assert stored["-"]["status"] == "refused"          # the refused record no longer reads as a result
    again = work_api.client(bob["key"]).call("lease", {"profile": PROFILE, "terms": TERMS})
    assert again["spec"]["cell_id"] == lease["spec"]["cell_id"]
    assert work_api.proc.poll() is None


def test_only_a_record_of_the_leased_cell_spec_with_sane_metrics_closes_a_lease(work_api, tmp_path):
    """Each tampering is refused with a one-line reason; the untampered record is accepted."""
    def tampered(change):
        def make(spec):
            record = make_record(spec, current)
            change(record)
            return record
        return make

    def set_path(path: str, value):
        def change(record):
            *head, last = path.split(".")
            node = record
            for part in head:
                node = node[part]
            node[last] = value
        return change

    cases = {
        "params": set_path("params", {"ref": "A", "model": "tiny", "quant": "Q8_0"}),
        "engine.source": set_path("engine.source", {"repo": "https://example.com/fork/llama.cpp"}),
        "engine.ref": set_path("engine.ref", {"name": "B", "kind": "tag", "value": "v0.3.35"}),
        "engine.cmake": set_path("engine.cmake", ["-DGGML_NATIVE=OFF"]),
        "build_flags": set_path("engine.build_flags", ["-DGGML_NATIVE=OFF"]),
        "model.quant": set_path("model.quant", "F16"),
        "model.name": set_path("model.name", "other"),
        "quantized_by": set_path("model.quantized_by.ref", {"name": "A", "kind": "tag", "value": "v0.3.35"}),
        "argv": lambda r: r["tool"]["argv"][0].extend(["-t", "64"]),
        "tool": lambda r: r["tool"]["argv"][0].__setitem__(0, "/bin/sh"),
        "hardware_class": set_path("hardware_class", OTHER["hardware_class"]),
        "run_id": set_path("run_id", "another-run"),
        "status": set_path("status", "splendid"),
        "nan": set_path("metrics.pp_tps.samples", [float("nan")] * 3),
        "negative": set_path("metrics.pp_tps.samples", [-5.0, 1.0, 2.0]),
        "huge": set_path("metrics.pp_tps.samples", [1e12, 1e12, 1e12]),
        "abc": set_path("metrics.pp_tps.samples", "abc"),
        "too many": set_path("metrics.pp_tps.samples", [100.0] * 50),
        "mean": set_path("metrics.pp_tps.mean", 1e6),
        "label": set_path("metrics.pp_tps.test", "pp16\x1b[2J"),
        "no metrics": set_path("metrics", {}),
        "commit": set_path("engine.commit", "nope"),
        "log key": set_path("logs", {"x": "runs/other/results/c/a.json"}),
    }
    work_api.queue(tiny_matrix(tmp_path))
    answers = {}
    for name, change in cases.items():
        current = work_api.enroll(f"t-{len(answers)}")
        answers[name] = deliver(work_api, current, tampered(change))[1]
    for name, answer in [*answers.items(), ("array", None), ("not json", None)]:
        if answer is None:
            current = work_api.enroll(f"t-{name.replace(' ', '-')}")
            answer = deliver(work_api, current, b"[1, 2]" if name == "array" else b"{oops")[1]
        assert answer.get("status") == 422 and "\n" not in answer["error"], (name, answer)
    assert "nan" in answers["nan"]["error"] and "params" in answers["params"]["error"]
    honest = work_api.enroll("honest")
    current = honest
    assert deliver(work_api, honest, tampered(lambda r: None))[1]["state"] == "done"
    assert agent_row(work_api, honest["agent_id"])["disagreed"] == 0
    assert work_api.proc.poll() is None


def test_a_replica_whose_primary_record_is_malformed_is_a_disagreement_not_a_500(seaweed, tmp_path):
    from agent.store.keys import result_key

    server = WorkApiServer(tmp_path, seaweed, lease_s=30, replicate=1.0)
    try:
        run_id = server.queue(tiny_matrix(tmp_path))
        alice, bob = server.enroll("alice"), server.enroll("bob")
        lease, done = deliver(server, alice, lambda spec: make_record(spec, alice))
        assert done["state"] == "done", done
        spec = lease["spec"]
        # the primary record changes in the store after its lease closed
        broken = make_record(spec, alice)
        broken["metrics"]["pp_tps"]["samples"] = "abc"
        prefix = server.store_url.split("/", 3)[3]
        seaweed.client().put_object(Bucket=seaweed.bucket, Key=f"{prefix}/{result_key(run_id, spec['cell_id'], alice['agent_id'])}",
                                    Body=json.dumps(broken).encode())
        replica, answer = deliver(server, bob, lambda spec: make_record(spec, bob))
        assert replica["role"] == "replica"
        assert answer.get("state") == "done", answer
        checks = server.listing()["checks"]
        assert [c["verdict"] for c in checks] == ["disagree"], checks
        assert "primary record is invalid" in checks[0]["detail"] and "samples" in checks[0]["detail"]
        assert (agent_row(server, alice["agent_id"])["disagreed"], agent_row(server, bob["agent_id"])["disagreed"]) \
            == (1, 0)
        assert {(c["role"], c["state"]) for c in server.listing()["claims"]} == {("primary", "done"),
                                                                                ("replica", "done")}
    finally:
        server.close()


def test_a_record_grant_over_junk_or_with_a_bad_or_oversized_size_gets_an_answer_not_a_500(work_api, tmp_path):
    # Before: a grant for a key that held an array or bytes that are no JSON was a 500 (the
    # granter read the old record with json.loads and .get), a size that is no number was a
    # 500 too, and a record grant had no size limit at all.
    from agent.store.keys import sha256_b64
    from agent.store.keys import result_key
    from coordinator.results.record_check import MAX_RECORD_BYTES

    work_api.queue(tiny_matrix(tmp_path))
    alice = work_api.enroll("alice")
    client = work_api.client(alice["key"])
    lease = client.call("lease", {"profile": PROFILE, "terms": TERMS})
    spec = lease["spec"]
    key = result_key(spec["run_id"], spec["cell_id"], alice["agent_id"])

    def grant(size) -> dict:
        item = {"key": key, "sha256": sha256_b64(b"x"), "size": size, "kind": "record"}
        return client.call("grant", {"lease": lease["lease"], "items": [item]})["answers"][0]

    assert "MiB" in grant(MAX_RECORD_BYTES + 1)["refused"]
    for size in ("big", -1, 1.5, [1], 1e300):
        assert "size" in grant(size)["refused"], size
    for junk in (b"[1, 2]", b"{oops", b'"ok"'):
        upload(client, lease["lease"], key, junk)          # each replaces the junk before it
    record = json.dumps(make_record(spec, alice)).encode()
    upload(client, lease["lease"], key, record)
    assert client.call("complete", {"lease": lease["lease"]})["state"] == "done"
    assert work_api.proc.poll() is None


# ---------------------------------------------------------------- the enrolled hardware class

def test_an_agent_cannot_lease_one_cell_as_three_hardware_classes(work_api, tmp_path):
    run_id = work_api.queue(tiny_matrix(tmp_path))
    alice = work_api.enroll("alice")
    client = work_api.client(alice["key"])
    assert client.call("lease", {"profile": PROFILE, "terms": TERMS})["lease"]
    with pytest.raises(ApiError) as changed:
        client.call("lease", {"profile": OTHER, "terms": TERMS})
    assert changed.value.status == 409
    assert str(changed.value) == (
        "this machine's profile changed since enrollment (class test-class-0001 -> test-class-0002); an admin "
        f"must approve it again: hwmatrix volunteers approve {alice['agent_id']}")
    with pytest.raises(ApiError, match="awaiting approval.*profile changed") as third:
        client.call("lease", {"profile": THIRD, "terms": TERMS})
    assert third.value.status == 403
    claims = [c for c in work_api.listing()["claims"] if c["run_id"] == run_id]
    assert [(c["hardware_class"], c["state"]) for c in claims] == [("test-class-0001", "queued")]   # given back
    row = agent_row(work_api, alice["agent_id"])
    assert row["state"] == "pending" and row["hardware_class"] == "test-class-0001"
    # approved again, the machine is of the class it reported when it changed, and only that
    assert work_api.cli("approve", alice["agent_id"]).returncode == 0
    assert agent_row(work_api, alice["agent_id"])["hardware_class"] == "test-class-0002"
    assert client.call("lease", {"profile": OTHER, "terms": TERMS})["lease"]
    claims = [c for c in work_api.listing()["claims"] if c["run_id"] == run_id]
    assert sorted(c["hardware_class"] for c in claims) == ["test-class-0001", "test-class-0002"]


def test_an_agent_cannot_claim_a_foreign_class_to_replicate_a_cell(seaweed, tmp_path):
    server = WorkApiServer(tmp_path, seaweed, lease_s=30, replicate=1.0)
    try:
        run_id = server.queue(tiny_matrix(tmp_path))
        alice, mallory = server.enroll("alice"), server.enroll("mallory", OTHER)
        assert deliver(server, alice, lambda spec: make_record(spec, alice))[1]["state"] == "done"
        client = server.client(mallory["key"])
        with pytest.raises(ApiError, match="profile changed since enrollment") as refused:
            client.call("lease", {"profile": PROFILE, "terms": TERMS})     # alice's class, to check alice
        assert refused.value.status == 409
        replica = next(c for c in server.listing()["claims"] if c["run_id"] == run_id and c["role"] == "replica")
        assert replica["state"] == "queued" and replica["agent_id"] is None
        assert agent_row(server, mallory["agent_id"])["hardware_class"] == OTHER["hardware_class"]
    finally:
        server.close()


def test_a_volunteer_whose_machine_changed_says_so_and_waits_for_approval(work_api, tmp_path, monkeypatch):
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"hardware_class": "pinned-before"}))
    monkeypatch.setenv("HWMATRIX_PROFILE", str(profile))
    first = Agent(work_api, tmp_path, "mover", work_api.invite(), "--max-cells", "0")
    assert first.wait(60) == 0, first.output()
    agent_id = first.creds()["agent_id"]
    assert agent_row(work_api, agent_id)["hardware_class"] == "pinned-before"
    profile.write_text(json.dumps({"hardware_class": "pinned-after"}))
    moved = Agent(work_api, tmp_path, "mover", None, "--exit-when-idle")
    said = wait_for(lambda: "approve it again" in moved.output() and moved.output(), 60, 0.5)
    try:
        assert said, moved.output()
        assert f"class pinned-before -> pinned-after); an admin must approve it again: hwmatrix volunteers " \
               f"approve {agent_id}" in said
        assert moved.proc.poll() is None and "Traceback" not in said        # it waits, like a pending agent
    finally:
        moved.kill()
    assert work_api.cli("approve", agent_id).returncode == 0
    again = Agent(work_api, tmp_path, "mover", None, "--exit-when-idle")
    assert again.wait(60) == 0, again.output()
    assert "no work for this machine" in again.output()


# ---------------------------------------------------------------- control characters

def test_an_enrollment_name_with_control_characters_is_refused_before_the_code_is_spent(work_api):
    code = work_api.invite()
    for name in ("evil\x1b]0;pwned\x07", "line\n12:00:00 enrolled v-admin", "\u202egnp.exe", "csi\x9b2J",
                 "del\x7f", "x" * 101):
        with pytest.raises(ApiError, match="name: ") as refused:
            work_api.client().call("enroll", {"code": code, "name": name, "profile": PROFILE})
        assert refused.value.status == 400, name
    assert work_api.client().call("enroll", {"code": code, "name": "fine", "profile": PROFILE})["agent_id"]
    assert [a["name"] for a in work_api.listing()["agents"]] == ["fine"]


def test_profiles_and_release_reasons_with_control_characters_are_refused(work_api, tmp_path):
    for bad in ({**PROFILE, "cpu": {"vendor": "AMD", "brand": "EPYC\r\nforged"}},
                {**PROFILE, "hardware_class": "class\u2066x"}, {**PROFILE, "gpus": {"count": 0, "devices": [
                    {"index": 0, "name": "\x1b[2Jgpu"}]}}, {**PROFILE, "hostname": "h" * 300}):
        with pytest.raises(ApiError, match="profile") as refused:
            work_api.client().call("enroll", {"code": work_api.invite(), "name": "n", "profile": bad})
        assert refused.value.status == 400
    work_api.queue(tiny_matrix(tmp_path))
    alice = work_api.enroll("alice")
    client = work_api.client(alice["key"])
    with pytest.raises(ApiError, match="profile.cpu.brand") as refused:
        client.call("lease", {"profile": {**PROFILE, "cpu": {"brand": "x\x1bP"}}, "terms": TERMS})
    assert refused.value.status == 400
    lease = client.call("lease", {"profile": PROFILE, "terms": TERMS})["lease"]
    for reason in ("owner policy\n21:00:00 enrolled v-admin-000000 (approved)", "r" * 301, "\u202eevil"):
        with pytest.raises(ApiError, match="reason") as refused:
            client.call("release", {"lease": lease, "reason": reason})
        assert refused.value.status == 400
    client.call("release", {"lease": lease, "reason": "owner policy: no GPUs"})
    assert [c["reason"] for c in work_api.listing()["claims"]] == ["owner policy: no GPUs"]


def test_the_agent_cleans_its_own_release_reasons():
    from agent.volunteer.loop import one_line
    from coordinator.volunteers.volunteer_input import check_reason

    cleaned = one_line("not delivered: \x1b[31mred\nnext line\u202e" + "x" * 400)
    assert check_reason(cleaned) == cleaned and len(cleaned) == 300


def test_the_same_machine_with_another_hostname_or_kernel_is_no_profile_change():
    from coordinator.volunteers.volunteer_input import profile_change

    base = {**PROFILE, "cpu": {"vendor": "AMD", "brand": "EPYC", "flags": ["avx2", "avx512f"]},
            "memory": {"ram_gb": 62.7}, "os": {"kernel": "6.1"}}
    assert profile_change(base, {**base, "hostname": "renamed", "os": {"kernel": "6.9"},
                                 "memory": {"ram_gb": 62.9}}) is None
    assert profile_change(base, {**base, "cpu": {**base["cpu"], "flags": ["avx2"]}}) == \
        "class test-class-0001, cpu flags changed"
    assert profile_change(base, {**base, "gpus": {"count": 2}}) == "class test-class-0001, gpu count changed"


# ---------------------------------------------------------------- the enrollment code out of ps

def test_the_enrollment_code_can_come_from_a_file_or_stdin(work_api, tmp_path):
    code_file = tmp_path / "code.txt"
    code_file.write_text(work_api.invite() + "\n")
    by_file = Agent(work_api, tmp_path, "by-file", None, "--max-cells", "0", "--code-file", str(code_file))
    assert by_file.wait(60) == 0, by_file.output()
    assert by_file.creds()["agent_id"].startswith("v-by-file-")

    state = tmp_path / "agent-by-stdin"
    state.mkdir()
    (state / "policy.yaml").write_text((by_file.state / "policy.yaml").read_text())
    argv = [sys.executable, "-m", "coordinator.cli", "agent", "volunteer", "--coordinator", work_api.url,
            "--policy", str(state / "policy.yaml"), "--ca-cert", work_api.ca, "--state", str(state),
            "--name", "by-stdin", "--max-cells", "0", "--code", "-"]
    done = subprocess.run(argv, cwd=REPO, input=work_api.invite() + "\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((state / "credentials.json").read_text())["agent_id"].startswith("v-by-stdin-")

    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    for path, said in ((empty, "no enrollment code in"), (tmp_path / "missing.txt", "cannot read the enrollment code")):
        agent = Agent(work_api, tmp_path, f"bad-{path.stem}", None, "--code-file", str(path))
        assert agent.wait(60) == 2 and said in agent.output() and "Traceback" not in agent.output(), agent.output()
