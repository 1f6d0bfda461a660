"""The S3 backend of the store (any S3-compatible endpoint): the same keys as file://,
conditional writes (``If-None-Match: *``), a SHA-256 checksum on every object that the
server verifies, and logs over the multipart threshold sent in parts.

Credentials come only from boto3's usual chain (environment, ~/.aws, instance role); the
endpoint from ``--endpoint-url`` or ``AWS_ENDPOINT_URL``. Nothing here writes them anywhere.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlparse

from agent.spec.clash import ClashPolicy
from agent.store.keys import Clash, StoreError, copy_keys, key_part, sha256_b64

MULTIPART_THRESHOLD = 8 * 1024 * 1024
LOG_TAG = "hwmatrix-kind=log"          # the lifecycle rule in infra/s3 expires logs by this tag


def s3_client(endpoint_url: str | None = None):
    """A boto3 client for the endpoint and the credentials in the environment now; clients
    are reused, since building one costs about a quarter second of botocore model parsing."""
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    identity = tuple(os.environ.get(name) for name in
                     ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"))
    return _client(endpoint, region, identity)


@functools.lru_cache(maxsize=16)
def _client(endpoint: str | None, region: str, identity: tuple):
    """Path-style addressing (works with every S3-compatible server), SigV4, and a few quick
    retries - long outages are the spool's job, not the client's. A session of its own:
    boto3's default session keeps the credentials it first found."""
    import boto3
    from botocore.config import Config

    config = Config(signature_version="s3v4", s3={"addressing_style": "path"}, connect_timeout=5,
                    read_timeout=30, retries={"mode": "standard", "max_attempts": 3},
                    request_checksum_calculation="when_required", response_checksum_validation="when_required",
                    max_pool_connections=32)
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=config)


CONDITION_FAILED = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")   # someone wrote first
MISSING = ("NoSuchKey", "404", "NotFound")


def _code(exc) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


class S3Store:
    """``s3://bucket/prefix``; the prefix is part of every key."""

    grants: ClassVar[bool] = True
    no_credentials_env: ClassVar[dict[str, str]] = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
                                                    "AWS_SESSION_TOKEN": "", "AWS_EC2_METADATA_DISABLED": "true"}
    url_form: ClassVar[str] = "s3://BUCKET/PREFIX"

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        """``s3://bucket/prefix``; the endpoint from AWS_ENDPOINT_URL, credentials from boto3's chain."""
        parsed = urlparse(url)
        return cls(parsed.netloc, parsed.path)

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None):
        if not bucket:
            raise StoreError("an s3:// store needs a bucket: s3://BUCKET/PREFIX")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        for part in self.prefix.split("/") if self.prefix else []:
            key_part(part)
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.client = s3_client(self.endpoint_url)

    def _key(self, key: str) -> str:
        for part in key.split("/"):
            key_part(part)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _errors(self, exc: Exception, key: str) -> StoreError:
        """A store error a user can act on (no credentials, no bucket, endpoint down)."""
        from botocore.exceptions import EndpointConnectionError, NoCredentialsError

        if isinstance(exc, NoCredentialsError):
            return StoreError(f"no S3 credentials for {self.url}: set them the usual boto3 way "
                              "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials or an instance role)")
        if isinstance(exc, EndpointConnectionError):
            return StoreError(f"the S3 endpoint {self.endpoint_url or 'of AWS'} does not answer ({self.url})")
        code = _code(exc)
        if code in ("NoSuchBucket",):
            return StoreError(f"bucket {self.bucket!r} does not exist at {self.endpoint_url or 'AWS'}")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return StoreError(f"the S3 store refused access to {key} ({code}): check the credentials")
        return StoreError(f"S3 {code or type(exc).__name__} on {key}: {exc}")

    def put(self, key: str, data: bytes, on_clash: ClashPolicy = "reject", *, tag: str | None = None) -> str:
        """Write ``data`` at ``key`` only if the key is free (or the content is identical);
        otherwise the policy decides. Returns the key written."""
        from botocore.exceptions import BotoCoreError, ClientError

        extra = ({"Tagging": tag} if tag else {}) | ({} if on_clash == "replace" else {"IfNoneMatch": "*"})
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                   ChecksumSHA256=sha256_b64(data), **extra)
            return key
        except ClientError as exc:
            if _code(exc) not in CONDITION_FAILED:
                raise self._errors(exc, key) from None
        except BotoCoreError as exc:
            raise self._errors(exc, key) from None
        if self.get(key) == data:
            return key                                # an idempotent retry, not a clash
        if on_clash == "reject":
            raise Clash(f"{key} exists in {self.url} with other content")
        for alt in copy_keys(key):
            try:
                return self.put(alt, data, on_clash="reject", tag=tag)
            except Clash:
                continue
        raise StoreError(f"too many copies of {key}")

    def put_file(self, key: str, path: Path, on_clash: ClashPolicy = "replace", *, tag: str | None = LOG_TAG) -> str:
        """A log: small ones in one conditional PUT, big ones in parts, each part checksummed."""
        size = Path(path).stat().st_size
        if size < MULTIPART_THRESHOLD:
            return self.put(key, Path(path).read_bytes(), on_clash, tag=tag)
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD)
        extra = {"ChecksumAlgorithm": "SHA256"} | ({"Tagging": tag} if tag else {})
        try:
            self.client.upload_file(str(path), self.bucket, self._key(key), ExtraArgs=extra, Config=config)
        except (BotoCoreError, ClientError) as exc:
            raise self._errors(exc, key) from None
        return key

    def get(self, key: str) -> bytes:
        return self.get_versioned(key)[0]

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """Content and ETag, for a compare-and-swap with ``put_if``."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return answer["Body"].read(), answer["ETag"]
        except ClientError as exc:
            if _code(exc) in MISSING:
                raise KeyError(key) from None
            raise self._errors(exc, key) from None
        except BotoCoreError as exc:
            raise self._errors(exc, key) from None

    def put_if(self, key: str, data: bytes, version: str | None) -> bool:
        """Write only if the object is still the version read (its ETag), or still absent
        (``None``); False when someone else wrote first."""
        from botocore.exceptions import BotoCoreError, ClientError

        condition = {"IfMatch": version} if version else {"IfNoneMatch": "*"}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                   ChecksumSHA256=sha256_b64(data), **condition)
            return True
        except ClientError as exc:
            if _code(exc) in CONDITION_FAILED + MISSING:
                return False
            raise self._errors(exc, key) from None
        except BotoCoreError as exc:
            raise self._errors(exc, key) from None

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as exc:  # noqa: BLE001 - sorted below
            if _code(exc) in MISSING:
                return False
            raise self._errors(exc, key) from None

    def list(self, prefix: str) -> list[str]:
        return sorted(self.list_versions(prefix))

    def get_json(self, key: str) -> dict:
        return json.loads(self.get(key))

    def run_ids(self) -> list[str]:
        """One delimited listing of runs/ (a page per 1,000 runs), not a walk of every key."""
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key("runs") + "/"
        ids = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full,
                                                                              Delimiter="/"):
                ids.extend(p["Prefix"][len(full):].rstrip("/") for p in page.get("CommonPrefixes", []))
        except (BotoCoreError, ClientError) as exc:
            raise self._errors(exc, "runs/") from None
        return sorted(ids)

    def list_versions(self, prefix: str) -> dict[str, str]:
        """key -> ETag, from the listing itself (no GET per object)."""
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(prefix.rstrip("/")) + "/" if prefix.strip("/") else (f"{self.prefix}/" if self.prefix else "")
        cut = len(self.prefix) + 1 if self.prefix else 0
        out = {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                out.update((obj["Key"][cut:], obj["ETag"]) for obj in page.get("Contents", []))
        except (BotoCoreError, ClientError) as exc:
            raise self._errors(exc, prefix) from None
        return out

    def presign_put(self, key: str, sha256: str, expires_s: int, *, overwrite: bool = False,
                    log: bool = False) -> dict:
        """A URL that can PUT exactly this content (its SHA-256 is signed) at exactly this
        key, once (If-None-Match is signed too, unless ``overwrite``), for ``expires_s``.
        Returns the URL and the headers the uploader must send."""
        params = {"Bucket": self.bucket, "Key": self._key(key), "ChecksumSHA256": sha256}
        headers = {"x-amz-checksum-sha256": sha256}
        if not overwrite:
            params["IfNoneMatch"] = "*"
            headers["If-None-Match"] = "*"
        if log:
            params["Tagging"] = LOG_TAG
            headers["x-amz-tagging"] = LOG_TAG
        url = self.client.generate_presigned_url("put_object", Params=params, ExpiresIn=expires_s)
        return {"key": key, "url": url, "headers": headers}
