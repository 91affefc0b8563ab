"""Event files in S3: an `s3://bucket/prefix/` event path, one source per object.

Every object under the prefix whose name is an event file (`features.eventfile.is_event_file`:
`.jsonl`, `.jsonl.gz`, `.parquet`, ...) is a source, in key order (the archive's keys sort by event
date, then by when they were written: `worker/archive.py`). `since` (a `YYYY-MM-DD` date) keeps
the archive's date partitions from that day on, by key, without reading the older objects.
Objects are streamed (Parquet, which needs to seek, is read whole). Credentials and endpoints come
from boto3's standard chain (`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` point it at moto in the
tests); no credentials at all is a one-line usage error naming the prefix or object
(`plumbing.retry.MissingCredentialsError`). An object pickles without its client (a Dask worker
reading it builds its own from its environment).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, cast

from features.eventfile import is_event_file
from plumbing.retry import credentials_for

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

_DATE_PARTITION = re.compile(r"(?:^|/)date=(\d{4}-\d{2}-\d{2})/")


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/prefix/` -> (bucket, prefix)."""
    rest = uri[len("s3://") :] if uri.startswith("s3://") else ""
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"{uri}: expected s3://bucket/prefix/")
    return bucket, prefix


def s3_client() -> S3Client:
    import boto3  # the offline readers only; the worker writes with aiobotocore

    return boto3.client("s3")


@dataclass(frozen=True)
class S3EventObject:
    """One event file in S3 (an `EventSource`, see features/eventfile.py)."""

    bucket: str
    key: str
    client: S3Client | None = None  # a boto3 S3 client; None: one from the standard chain when opened
    size: int = 0  # bytes, as listed (0: unknown)

    def __reduce__(self) -> tuple[type[S3EventObject], tuple[str, str, None, int]]:
        """Pickled without its client (boto3 clients do not pickle): for Dask workers."""
        return (S3EventObject, (self.bucket, self.key, None, self.size))

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def is_parquet(self) -> bool:
        return self.key.lower().endswith(".parquet")

    def open_binary(self) -> IO[bytes]:
        client = self.client or s3_client()
        with credentials_for(f"S3 object {self.name}"):
            body = client.get_object(Bucket=self.bucket, Key=self.key)["Body"]
            if self.is_parquet:
                return io.BytesIO(body.read())  # Parquet's reader seeks
        return cast("IO[bytes]", body)  # botocore's StreamingBody, a binary stream: read() streams


def partition_date(key: str) -> str | None:
    """The day of the archive's `date=YYYY-MM-DD/` partition a key or path is in (the last one), or None."""
    found = _DATE_PARTITION.findall(key)
    return str(found[-1]) if found else None


def list_event_objects(
    uri: str, since: str | None = None, client: S3Client | None = None
) -> list[S3EventObject]:
    """Every event object under the prefix, in key order; with `since`, only date partitions on or
    after that day (objects outside any `date=` partition are always kept)."""
    bucket, prefix = split_uri(uri)
    client = client or s3_client()
    found: list[S3EventObject] = []
    with credentials_for(f"S3 prefix {uri}"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                if not is_event_file(key):
                    continue
                if (
                    since is not None
                    and (match := _DATE_PARTITION.search(key[len(prefix) :]))
                    and match[1] < since
                ):
                    continue
                found.append(S3EventObject(bucket, key, client, int(item.get("Size", 0))))
    return sorted(found, key=lambda o: o.key)
