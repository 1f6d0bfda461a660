"""The S3 material in infra/s3/ checked for what it promises: the coordinator's policy grants
only object writes and reads under the prefix (never delete, never bucket admin), the bucket
refuses plain HTTP, and the lifecycle rules are well formed and accepted by a real S3 server."""
from __future__ import annotations

import json

from tests.conftest import REPO

S3_DIR = REPO / "infra" / "s3"
BUCKET, PREFIX = "hwmatrix-results", "hwmatrix"
LOG_TAG = {"Key": "hwmatrix-kind", "Value": "log"}


def load(name: str) -> dict:
    """Plain JSON (no comments, no trailing commas): the aws CLI reads these with file://."""
    return json.loads((S3_DIR / name).read_text())


def as_list(x) -> list:
    """IAM allows a string or a list wherever one or more values go."""
    return x if isinstance(x, list) else [x]


def statements(policy: dict) -> list[dict]:
    """The statements of a policy, after checking the fields every statement needs."""
    assert policy["Version"] == "2012-10-17"
    assert policy["Statement"], "a policy with no statements"
    for st in policy["Statement"]:
        assert {"Effect", "Action", "Resource"} <= st.keys(), st
        assert st["Effect"] in ("Allow", "Deny")
    return policy["Statement"]


def test_coordinator_policy_is_least_privilege():
    """Only object reads and writes under PREFIX/, plus a listing restricted to PREFIX/."""
    allowed = {}
    for st in statements(load("coordinator-iam-policy.json")):
        assert st["Effect"] == "Allow"
        for action in as_list(st["Action"]):
            assert "*" not in action, f"wildcard action {action}"
            assert "Delete" not in action, f"{action}: records are never deleted"
            assert "Bucket" not in action or action == "s3:ListBucket", f"{action}: no bucket admin"
            allowed[action] = st
    assert {"s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload",
            "s3:ListMultipartUploadParts", "s3:ListBucket"} <= allowed.keys()
    for action, st in allowed.items():
        if action == "s3:ListBucket":
            assert as_list(st["Resource"]) == [f"arn:aws:s3:::{BUCKET}"]
            assert st["Condition"] == {"StringLike": {"s3:prefix": [f"{PREFIX}/*"]}}
        else:
            assert as_list(st["Resource"]) == [f"arn:aws:s3:::{BUCKET}/{PREFIX}/*"], action


def test_bucket_policy_refuses_plain_http():
    """Presigned URLs and records must never cross the network in clear text."""
    sts = statements(load("bucket-policy.json"))
    tls = [st for st in sts if st["Effect"] == "Deny"
           and st.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}]
    assert tls, "no statement denies aws:SecureTransport false"
    assert tls[0]["Principal"] == "*"
    assert set(as_list(tls[0]["Resource"])) == {f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"}
    assert all(st["Effect"] == "Deny" for st in sts), "the bucket policy only takes rights away"


def test_lifecycle_rules():
    """Logs (tagged, since no key prefix isolates them) expire; stale multipart uploads are aborted."""
    rules = load("lifecycle.json")["Rules"]
    assert len({r["ID"] for r in rules}) == len(rules), "rule IDs must be unique"
    assert all(r["Status"] == "Enabled" for r in rules)
    logs = [r for r in rules if "Expiration" in r]
    assert len(logs) == 1 and logs[0]["Filter"] == {"Tag": LOG_TAG}
    assert logs[0]["Expiration"] == {"Days": 90}
    mpu = [r for r in rules if "AbortIncompleteMultipartUpload" in r]
    assert len(mpu) == 1 and mpu[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert mpu[0]["Filter"] == {"Prefix": f"{PREFIX}/"}


def test_lifecycle_accepted_by_real_s3(seaweed):
    """The file is what `aws s3api put-bucket-lifecycle-configuration` takes, and a server accepts it."""
    s3, cfg = seaweed.client(), load("lifecycle.json")
    s3.put_bucket_lifecycle_configuration(Bucket=seaweed.bucket, LifecycleConfiguration=cfg)
    got = s3.get_bucket_lifecycle_configuration(Bucket=seaweed.bucket)["Rules"]
    assert sorted(got, key=lambda r: r["ID"]) == sorted(cfg["Rules"], key=lambda r: r["ID"])
