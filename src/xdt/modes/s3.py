"""The ``s3`` data path: an S3-compatible endpoint through boto3 (AWS S3, or any server that
speaks S3, e.g. moto's for the embedded default).

The payload goes to ``xdt/<sender>/<object id>`` in the bucket (multipart above
``MULTIPART_THRESHOLD``), its pull budget in the object's metadata. A receiver deletes a
one-pull object once it has every byte; the sender deletes what is left at expiry (its
sweeper) or on release, and reports still-unclaimed objects as held so that scale-down waits
for them, as it does for xdt objects. boto3 is blocking: calls run in worker threads.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from typing import Any

from .._core.errors import ObjectNotFound, SourceUnavailable
from .._core.refs import KeyRing, Reference, TransferMode
from .base import StoreSettings, stored_reference

__all__ = ["MULTIPART_THRESHOLD", "S3Path"]

MULTIPART_THRESHOLD = 16 << 20
LIST_INTERVAL = 1.0  # seconds between listings of the unclaimed objects


class S3Path:
    mode = TransferMode.S3

    def __init__(self, settings: StoreSettings, keyring: KeyRing, sender: str) -> None:
        import boto3  # only sidecars that use this mode load it
        import botocore.config
        import botocore.exceptions
        from boto3.s3.transfer import TransferConfig

        self.bucket = settings.s3_bucket
        self.keyring = keyring
        self.sender = sender  # this sidecar's prefix: its sweeper lists only its own objects
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            config=botocore.config.Config(max_pool_connections=64, retries={"max_attempts": 2}),
        )
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD
        )
        self._errors: tuple[type[BaseException], ...] = (
            botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError,
        )
        self._missing = botocore.exceptions.ClientError
        self._sweeps: dict[str, asyncio.TimerHandle] = {}  # key → deletion at expiry
        self._listed_at = -LIST_INTERVAL

    def _key(self, object_id: bytes, sender: str | None = None) -> str:
        return f"xdt/{sender or self.sender}/{object_id.hex()}"

    async def put(
        self, data: bytes | bytearray | memoryview, *, tenant: str, pulls: int | None, ttl: float
    ) -> str:
        object_id = os.urandom(16)
        key = self._key(object_id)
        budget = "unlimited" if pulls is None else str(pulls)
        try:
            await asyncio.to_thread(
                self._client.upload_fileobj,
                io.BytesIO(data),
                self.bucket,
                key,
                ExtraArgs={"Metadata": {"xdt-pulls": budget}},
                Config=self._transfer,
            )
        except self._errors as exc:
            raise SourceUnavailable(f"S3 bucket {self.bucket!r} refused the put: {exc}") from None
        loop = asyncio.get_running_loop()
        self._sweeps[key] = loop.call_later(ttl, self._sweep, key)
        ref = stored_reference(
            object_id, data, source=self.sender, tenant=tenant, ttl=ttl, mode=self.mode
        )
        return self.keyring.seal(ref)

    async def get(self, ref: Reference, token: str) -> bytes:
        key = self._key(ref.object_id, ref.source)
        try:
            answer = await asyncio.to_thread(self._client.get_object, Bucket=self.bucket, Key=key)
            data: bytes = await asyncio.to_thread(answer["Body"].read)
        except self._missing as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectNotFound(
                    f"object {ref.object_hex} is no longer in S3: its pull budget was used, or "
                    "it was released or expired"
                ) from None
            raise SourceUnavailable(f"S3 failed the pull of {key}: {exc}") from None
        except self._errors as exc:
            raise SourceUnavailable(f"S3 failed the pull of {key}: {exc}") from None
        if answer.get("Metadata", {}).get("xdt-pulls") == "1":
            await self._delete(key)
        return data

    async def release(self, ref: Reference) -> bool:
        if ref.source != self.sender:
            return False  # only its sender frees it early; a receiver's pull or expiry does
        key = self._key(ref.object_id, ref.source)
        sweep = self._sweeps.pop(key, None)
        if sweep is not None:
            sweep.cancel()
        await self._delete(key)
        return True

    async def unclaimed(self) -> int:
        """How many of this sender's objects are still in the bucket (scale-down waits for
        them); forgets the ones receivers have taken. Draining asks ten times a second: the
        bucket is listed at most every :data:`LIST_INTERVAL`, else the last count stands."""
        if not self._sweeps:
            return 0
        now = time.monotonic()
        if now - self._listed_at < LIST_INTERVAL:
            return len(self._sweeps)
        self._listed_at = now
        try:
            listing = await asyncio.to_thread(
                self._client.list_objects_v2, Bucket=self.bucket, Prefix=f"xdt/{self.sender}/"
            )
        except self._errors:
            return len(self._sweeps)  # unknown: assume still there
        present = {item["Key"] for item in listing.get("Contents", [])}
        for key in [k for k in self._sweeps if k not in present]:
            self._sweeps.pop(key).cancel()
        return len(self._sweeps)

    def _sweep(self, key: str) -> None:
        self._sweeps.pop(key, None)
        task = asyncio.get_running_loop().create_task(self._delete(key))
        task.add_done_callback(lambda t: t.exception())  # a failed sweep is retried by nobody

    async def _delete(self, key: str) -> None:
        try:
            await asyncio.to_thread(self._client.delete_object, Bucket=self.bucket, Key=key)
        except self._errors as exc:
            raise SourceUnavailable(f"S3 failed to delete {key}: {exc}") from None

    async def close(self) -> None:
        for sweep in self._sweeps.values():
            sweep.cancel()
        # Objects still here outlive this sender only if it is stopped before they expire,
        # which scale-down avoids (unclaimed() keeps the instance draining).
        for key in list(self._sweeps):
            await self._delete(key)
        self._sweeps.clear()
        self._client.close()
