"""What instances that died leave in the stores, removed once nobody may want it.

An xdt object dies with its sidecar's memory, and a Redis key with its TTL; but an S3 object is
deleted by its sender's sweeper at expiry, and a sender that is killed takes the sweeper with
it. The janitor hears that an instance failed and, once the object TTL has passed (every
reference to what it wrote has expired, so no receiver may still pull it), deletes what it
left in the bucket. Sweeps still pending when the platform stops run then: no instance is left
to pull anything. A platform that is itself killed leaves them; a bucket lifecycle rule is the
backstop there (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Mapping

from .._core.refs import TransferMode
from .._util.tasks import TaskSet
from ..modes import StoreSettings
from ..modes.s3 import remove_left_by
from .spec import Spec

__all__ = ["Janitor"]

_log = logging.getLogger(__name__)
# Seconds past the TTL, and past its death: the clocks of the sender and of S3 differ a little,
# and a PUT it sent just before it died is stored (and stamped) by S3 just after.
_MARGIN = 2.0


class Janitor:
    """``on_removed(function, instance, count)`` hears each sweep that deleted something."""

    def __init__(
        self,
        spec: Spec,
        stores: StoreSettings,
        *,
        credentials: Mapping[str, str] | None = None,
        on_removed: Callable[[str, str, int], None] = lambda function, instance, count: None,
    ) -> None:
        self.spec, self.stores, self.credentials = spec, stores, credentials
        self.on_removed = on_removed
        # instance → (its function, when it died)
        self._pending: dict[str, tuple[str, datetime.datetime]] = {}
        self._tasks = TaskSet()

    def instance_failed(self, instance: str, function: str) -> None:
        """``instance`` of ``function`` died without cleaning up after itself."""
        spec = self.spec.function(function)
        if spec is None or self.spec.mode_of(spec) is not TransferMode.S3:
            return
        if instance in self._pending:
            return
        self._pending[instance] = (function, datetime.datetime.now(datetime.UTC))
        self._tasks.spawn(self._later(instance))

    async def _later(self, instance: str) -> None:
        await asyncio.sleep(self.spec.platform.object_ttl + _MARGIN)
        await self._sweep(instance)

    async def _sweep(self, instance: str) -> None:
        pending = self._pending.pop(instance, None)
        if pending is None:
            return
        function, died = pending
        try:
            count = await asyncio.to_thread(
                remove_left_by, self.stores, instance,
                written_before=died + datetime.timedelta(seconds=_MARGIN),
                credentials=self.credentials,
            )  # fmt: skip
        except Exception as exc:  # S3 down: say so; the lifecycle rule is the backstop
            _log.warning("could not remove what %s left in S3: %s", instance, type(exc).__name__)
            return
        if count:
            self.on_removed(function, instance, count)

    async def close(self) -> None:
        """Sweep now what is still pending: the platform is stopping."""
        await self._tasks.cancel()
        await asyncio.gather(*(self._sweep(i) for i in list(self._pending)))
