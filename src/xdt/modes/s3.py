"""The ``s3`` data path: an S3-compatible endpoint through boto3 (AWS S3, or any server that
speaks S3, e.g. moto's for the embedded default).

The payload goes to ``xdt/<sender>/<object id>`` in the bucket (multipart above
``MULTIPART_THRESHOLD``), its pull budget in the object's metadata. A receiver deletes a
one-pull object once it has every byte, with a conditional delete (``If-Match`` on the ETag it
read), so that of receivers racing for it only the one whose delete succeeds delivers it. An
N-pull object keeps its remaining count in a small object beside it (``….pulls``), which each
pull decrements with a conditional write (``If-Match`` on its ETag: S3's compare-and-swap since
2024), so that N pulls, and no more, succeed, and the last one deletes both. An unlimited one
(broadcast) is read until expiry. The sender deletes what is left at expiry (its sweeper) or
on release, and reports still-unclaimed objects as held so that scale-down waits for them, as
it does for xdt objects. A sender that dies takes its sweeper with it: the platform then
removes what it left, once its references have expired (:func:`remove_left_by`). boto3 is
blocking: calls run in worker threads.

What it costs is counted as it happens (:class:`StorageCounts`): every HTTP request boto3
sends, by operation, from boto3's own ``before-send`` event (so retries and multipart parts
count), and bytes × seconds in the bucket — the put time travels in the object's metadata
(``xdt-put-at``); the receiver that deletes the object, or the sender that releases it, adds
its stay (one that expired unclaimed is swept without one).
"""

from __future__ import annotations

import asyncio
import datetime
import io
import math
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from .._core.errors import ObjectNotFound, SourceUnavailable
from .._core.refs import KeyRing, Reference, TransferMode
from .base import Data, StorageCounts, StoreSettings, checked, plain, stored_reference

__all__ = ["MULTIPART_THRESHOLD", "S3Path", "remove_left_by", "s3_client"]

MULTIPART_THRESHOLD = 16 << 20
MAX_STAY = 24 * 3600.0  # the object store's max_ttl
LIST_INTERVAL = 1.0  # seconds between listings of the unclaimed objects
BUDGET_SUFFIX = ".pulls"
_BUDGET_ATTEMPTS = 16  # conditional writes lost to concurrent pulls before giving up
_MISSING = ("NoSuchKey", "404")
_LOST_RACE = ("PreconditionFailed", "412")  # another reader took it first


def s3_client(
    settings: StoreSettings, credentials: Mapping[str, str] | None = None, **options: Any
) -> Any:
    """A boto3 S3 client for the endpoint and region of ``settings``. ``credentials``:
    AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, if not the environment's."""
    import boto3  # only processes that use this mode load it

    keys = {name.lower(): value for name, value in (credentials or {}).items()}
    return boto3.client(
        "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region,
        **keys, **options,
    )  # fmt: skip


class S3Path:
    mode = TransferMode.S3

    def __init__(
        self,
        settings: StoreSettings,
        keyring: KeyRing,
        sender: str,
        *,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        import botocore.config
        import botocore.exceptions
        from boto3.s3.transfer import TransferConfig

        self.bucket = settings.s3_bucket
        self.keyring = keyring
        self.sender = sender  # this sidecar's prefix: its sweeper lists only its own objects
        self._client: Any = s3_client(
            settings,
            credentials,
            config=botocore.config.Config(max_pool_connections=64, retries={"max_attempts": 2}),
        )
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD
        )
        self._errors: tuple[type[BaseException], ...] = (
            botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError,
        )
        self._client_error = botocore.exceptions.ClientError
        self._sweeps: dict[str, asyncio.TimerHandle] = {}  # key → deletion at expiry
        self._put: dict[str, tuple[float, int]] = {}  # key → (put at, size): for its stay
        self._listed_at = -LIST_INTERVAL
        self.counts = StorageCounts()
        self._counting = threading.Lock()
        self._client.meta.events.register("before-send.s3", self._count_request)

    def _count_request(self, event_name: str, **kwargs: Any) -> None:
        # "before-send.s3.PutObject": one HTTP request about to leave, from one of boto3's
        # worker threads (a Counter's += is a read and a write: two threads could lose one).
        with self._counting:
            self.counts.requests[event_name.rsplit(".", 1)[-1]] += 1

    def _stayed(self, size: int, put_at: float | None) -> None:
        # The put time is the bucket's word, which anyone who can write to it may change:
        # a stay is at least nothing and at most the longest life an object may have.
        if put_at is not None and math.isfinite(put_at):
            self.counts.byte_seconds += size * min(MAX_STAY, max(0.0, time.time() - put_at))

    def _key(self, object_id: bytes, sender: str | None = None) -> str:
        return f"xdt/{sender or self.sender}/{object_id.hex()}"

    async def put(self, data: Data, *, tenant: str, pulls: int | None, ttl: float) -> str:
        value = plain(data)
        object_id = os.urandom(16)
        key = self._key(object_id)
        budget = "unlimited" if pulls is None else str(pulls)
        try:
            if pulls is not None and pulls > 1:
                await self._call("put_object", Bucket=self.bucket, Key=key + BUDGET_SUFFIX,
                                 Body=budget.encode())  # fmt: skip
            put_at = time.time()
            await asyncio.to_thread(
                self._client.upload_fileobj,
                io.BytesIO(value),
                self.bucket,
                key,
                ExtraArgs={"Metadata": {"xdt-pulls": budget, "xdt-put-at": f"{put_at:.6f}"}},
                Config=self._transfer,
            )
        except self._errors as exc:
            raise SourceUnavailable(f"S3 bucket {self.bucket!r} refused the put: {exc}") from None
        loop = asyncio.get_running_loop()
        self._sweeps[key] = loop.call_later(ttl, self._sweep, key)
        self._put[key] = (put_at, memoryview(value).nbytes)
        ref = stored_reference(
            object_id, value, source=self.sender, tenant=tenant, ttl=ttl, mode=self.mode
        )
        return self.keyring.seal(ref)

    async def get(self, token: str, ref: Reference | None) -> bytes:
        assert ref is not None
        key = self._key(ref.object_id, ref.source)
        try:
            answer = await self._call("get_object", Bucket=self.bucket, Key=key)
            data: bytes = await asyncio.to_thread(answer["Body"].read)
            metadata = answer.get("Metadata", {})
            budget = metadata.get("xdt-pulls")
            if budget == "1":
                # Only the get whose delete of what it read succeeds delivers: S3 has no
                # GETDEL, but a conditional delete lets one of many racing readers win.
                await self._call("delete_object", Bucket=self.bucket, Key=key,
                                 IfMatch=answer["ETag"])  # fmt: skip
                self._stayed(len(data), _put_at(metadata))
            elif budget != "unlimited" and await self._take_pull(key) == 0:
                await self._delete(key, key + BUDGET_SUFFIX)
                self._stayed(len(data), _put_at(metadata))
        except self._client_error as exc:
            if exc.response.get("Error", {}).get("Code") in (*_MISSING, *_LOST_RACE):
                raise self._gone(ref) from None
            raise SourceUnavailable(f"S3 failed the pull of {key}: {exc}") from None
        except self._errors as exc:
            raise SourceUnavailable(f"S3 failed the pull of {key}: {exc}") from None
        return checked(ref, data)

    async def _take_pull(self, key: str) -> int:
        """Count one pull against an N-pull object's budget; the pulls left after it. Raises
        ObjectNotFound's S3 error when none is left (the budget object is gone or at 0)."""
        budget_key = key + BUDGET_SUFFIX
        for _ in range(_BUDGET_ATTEMPTS):
            answer = await self._call("get_object", Bucket=self.bucket, Key=budget_key)
            left = int(await asyncio.to_thread(answer["Body"].read) or b"0") - 1
            if left < 0:
                raise self._client_error({"Error": {"Code": "NoSuchKey"}}, "GetObject")
            try:
                await self._call("put_object", Bucket=self.bucket, Key=budget_key,
                                 Body=str(left).encode(), IfMatch=answer["ETag"])  # fmt: skip
            except self._client_error as exc:
                if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                    continue  # another pull took one meanwhile: read the count again
                raise
            return left
        raise SourceUnavailable(f"S3: {_BUDGET_ATTEMPTS} pulls of {key} raced; try again")

    async def release(self, token: str, ref: Reference | None) -> bool:
        assert ref is not None
        if ref.source != self.sender:
            return False  # only its sender frees it early; a receiver's pull or expiry does
        key = self._key(ref.object_id, ref.source)
        sweep = self._sweeps.pop(key, None)
        if sweep is not None:
            sweep.cancel()
        try:  # S3's delete says nothing of whether there was anything to delete: ask first
            await self._call("head_object", Bucket=self.bucket, Key=key)
        except self._client_error as exc:
            if exc.response.get("Error", {}).get("Code") not in _MISSING:
                raise SourceUnavailable(f"S3 failed the release of {key}: {exc}") from None
            return False
        except self._errors as exc:
            raise SourceUnavailable(f"S3 failed the release of {key}: {exc}") from None
        await self._delete(key, key + BUDGET_SUFFIX)
        self._stayed_here(key)
        return True

    async def unclaimed(self) -> int:
        """How many of this sender's objects are still in the bucket (scale-down waits for
        them); forgets the ones receivers have taken. Draining asks ten times a second: the
        bucket is listed, every page of it, at most every :data:`LIST_INTERVAL`, else the last
        count stands."""
        if not self._sweeps:
            return 0
        now = time.monotonic()
        if now - self._listed_at < LIST_INTERVAL:
            return len(self._sweeps)
        self._listed_at = now
        try:
            present = await asyncio.to_thread(self._list, f"xdt/{self.sender}/")
        except self._errors:
            return len(self._sweeps)  # unknown: assume still there
        for key in [k for k in self._sweeps if k not in present]:
            self._sweeps.pop(key).cancel()
            self._put.pop(key, None)  # a receiver took it, and counted its stay
        return len(self._sweeps)

    def _list(self, prefix: str) -> set[str]:
        keys: set[str] = set()
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        for page in pages:
            keys.update(
                item["Key"]
                for item in page.get("Contents", [])
                if not item["Key"].endswith(BUDGET_SUFFIX)
            )
        return keys

    def _sweep(self, key: str) -> None:
        self._sweeps.pop(key, None)
        task = asyncio.get_running_loop().create_task(self._delete(key, key + BUDGET_SUFFIX))
        task.add_done_callback(lambda t: t.exception())  # a failed sweep is retried by nobody
        # Its stay is not counted: the sweep does not know whether a receiver took the object
        # (and counted it) or it expired unclaimed, and asking would cost a request.
        self._put.pop(key, None)

    def _stayed_here(self, key: str) -> None:
        """This sender released ``key``, which was still there: its stay in the bucket. (An
        object a receiver took is counted by that receiver.)"""
        put = self._put.pop(key, None)
        if put is not None:
            self._stayed(put[1], put[0])

    async def _call(self, operation: str, **arguments: Any) -> Any:
        return await asyncio.to_thread(getattr(self._client, operation), **arguments)

    async def _delete(self, *keys: str) -> None:
        try:
            for key in keys:
                await self._call("delete_object", Bucket=self.bucket, Key=key)
        except self._errors as exc:
            raise SourceUnavailable(f"S3 failed to delete {keys[0]}: {exc}") from None

    @staticmethod
    def _gone(ref: Reference) -> ObjectNotFound:
        return ObjectNotFound(
            "the object is no longer in S3: its pull budget was used, or it was released or expired"
        )

    async def close(self) -> None:
        for sweep in self._sweeps.values():
            sweep.cancel()
        # Objects still here outlive this sender only if it is stopped before they expire,
        # which scale-down avoids (unclaimed() keeps the instance draining).
        for key in list(self._sweeps):
            await self._delete(key, key + BUDGET_SUFFIX)
        self._sweeps.clear()
        self._put.clear()
        self._client.close()


def _put_at(metadata: Mapping[str, str]) -> float | None:
    try:
        return float(metadata["xdt-put-at"])
    except (KeyError, ValueError):
        return None  # written by another version, or not by us: its stay is unknown


def remove_left_by(
    settings: StoreSettings,
    sender: str,
    *,
    written_before: datetime.datetime,
    credentials: Mapping[str, str] | None = None,
) -> int:
    """Delete the objects (and pull budgets) ``sender`` wrote before ``written_before``: what
    a sidecar that died without its sweeper left. Blocking; the number of keys deleted. Only
    older keys go, so that a later sender of the same name (another run sharing the bucket)
    keeps its own. ``credentials``: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, if not the
    environment's."""
    client = s3_client(settings, credentials)
    try:
        removed = 0
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=settings.s3_bucket, Prefix=f"xdt/{sender}/"
        )
        for page in pages:
            keys = [
                {"Key": item["Key"]}
                for item in page.get("Contents", [])
                if item["LastModified"] < written_before
            ]
            if keys:
                client.delete_objects(
                    Bucket=settings.s3_bucket, Delete={"Objects": keys, "Quiet": True}
                )
                removed += len(keys)
        return removed
    finally:
        client.close()
