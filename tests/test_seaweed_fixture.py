"""The SeaweedFS fixture is a real, strict S3 server: it refuses overwrites under IfNoneMatch,
wrong checksums and unsigned writes, and it survives a stop/restart with its data. If these
fail, tests of the s3:// store against it prove nothing."""
from __future__ import annotations

import base64
import hashlib
import http.client
import secrets
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError


def http_put(url: str, body: bytes) -> int:
    """A raw HTTP PUT with no extra headers (urllib would add a Content-Type), returning the status."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request("PUT", u.path + (f"?{u.query}" if u.query else ""), body=body)
        return conn.getresponse().status
    finally:
        conn.close()


def error_of(excinfo) -> tuple[int, str]:
    """(HTTP status, S3 error code) of a ClientError."""
    r = excinfo.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]


def key() -> str:
    return f"fixture/{secrets.token_hex(6)}"


def test_conditional_put_refuses_existing_key(seaweed):
    """IfNoneMatch='*' is how the store avoids silent overwrites; the server must enforce it."""
    s3, k = seaweed.client(), key()
    s3.put_object(Bucket=seaweed.bucket, Key=k, Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=seaweed.bucket, Key=k, Body=b"second", IfNoneMatch="*")
    assert error_of(e) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=seaweed.bucket, Key=k)["Body"].read() == b"first"


def test_wrong_checksum_is_refused(seaweed):
    """A body that does not match its SHA-256 must not be stored."""
    s3, k = seaweed.client(), key()
    wrong = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=seaweed.bucket, Key=k, Body=b"payload", ChecksumSHA256=wrong)
    assert error_of(e) == (400, "BadDigest")
    right = base64.b64encode(hashlib.sha256(b"payload").digest()).decode()
    s3.put_object(Bucket=seaweed.bucket, Key=k, Body=b"payload", ChecksumSHA256=right)


def test_unsigned_put_is_refused_presigned_is_accepted(seaweed):
    """Agents hold no keys: an anonymous PUT fails, the same PUT presigned by the coordinator works."""
    k = key()
    assert http_put(f"{seaweed.endpoint}/{seaweed.bucket}/{k}", b"anon") == 403
    url = seaweed.client().generate_presigned_url(
        "put_object", Params={"Bucket": seaweed.bucket, "Key": k}, ExpiresIn=60)
    assert http_put(url, b"signed") == 200
    assert seaweed.client().get_object(Bucket=seaweed.bucket, Key=k)["Body"].read() == b"signed"


def test_stop_then_restart_keeps_data(seaweed):
    """restart() is the outage used by fault tests: unreachable while down, same data after."""
    s3, k = seaweed.client(), key()
    s3.put_object(Bucket=seaweed.bucket, Key=k, Body=b"kept")
    seaweed.stop()
    with pytest.raises(EndpointConnectionError):
        s3.head_bucket(Bucket=seaweed.bucket)
    seaweed.start()
    assert s3.get_object(Bucket=seaweed.bucket, Key=k)["Body"].read() == b"kept"


def test_the_server_has_a_fixed_capacity_not_one_sized_from_the_free_disk(seaweed):
    """CI failed with 44 errors when the disk had 2.2 GiB free: `weed mini` sized its volumes
    from it (1 GiB each) and got 0 free volumes. The fixture now fixes 32 volumes of 64 MB."""
    import json
    import urllib.request

    from tests.seaweed import VOLUME_MAX, VOLUME_SIZE_MB

    with urllib.request.urlopen(f"http://127.0.0.1:{seaweed.ports['master']}/dir/status", timeout=10) as r:
        topology = json.load(r)["Topology"]
    assert topology["Max"] == VOLUME_MAX == 32
    assert "Volume Size:      64.00 MiB" in seaweed.log_path.read_text() and VOLUME_SIZE_MB == 64
