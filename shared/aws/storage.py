"""S3 for the orchestration: head/get/put/delete and presigned URLs, over an injected client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from shared.aws.clients import translate
from shared.errors import PayloadTooLarge


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    etag: str
    size: int
    mtime: str  # ISO-8601 UTC
    content_type: str


class Storage:
    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    def head(self, key: str) -> ObjectInfo | None:
        try:
            r = self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise translate(e, "S3 head") from e
        mtime = r["LastModified"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return ObjectInfo(key, r["ETag"].strip('"'), int(r["ContentLength"]), mtime, r.get("ContentType", ""))

    def get(self, key: str, max_bytes: int) -> bytes | None:
        """The object's bytes (None if absent); PayloadTooLarge past max_bytes, checked before reading."""
        try:
            r = self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise translate(e, "S3 get") from e
        if int(r["ContentLength"]) > max_bytes:
            r["Body"].close()
            raise PayloadTooLarge(f"the object is larger than {max_bytes} bytes")
        with r["Body"] as body:
            data = body.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"the object is larger than {max_bytes} bytes")
        return data

    def put(self, key: str, data: bytes, content_type: str) -> None:
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        except ClientError as e:
            raise translate(e, "S3 put") from e

    def copy(self, source_key: str, key: str) -> bool:
        """Server-side copy within the bucket (no bytes pass through Lambda); False if the source is gone."""
        if not source_key:
            return False
        try:
            self.s3.copy_object(
                Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": source_key}
            )
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise translate(e, "S3 copy") from e
        return True

    def delete(self, key: str) -> None:
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            raise translate(e, "S3 delete") from e

    def presign_get(self, key: str, expires_s: int) -> str:
        return self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=int(expires_s)
        )

    def presign_put(self, key: str, expires_s: int) -> str:
        return self.s3.generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=int(expires_s)
        )
