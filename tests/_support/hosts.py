"""Whether test hosts (network namespaces) can be made here: tests that need them skip,
saying why, where they cannot."""

from __future__ import annotations

import pytest

from xdt import HostsError
from xdt.platform.hosts import HostNetwork

__all__ = ["needs_hosts"]


def _why_not() -> str | None:
    network = HostNetwork(1)
    try:
        network.start()
    except HostsError as exc:
        return str(exc)
    finally:
        network.close()
    return None


WHY_NOT = _why_not()
needs_hosts = pytest.mark.skipif(WHY_NOT is not None, reason=f"no test hosts here: {WHY_NOT}")
