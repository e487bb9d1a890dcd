"""The embedded serverless platform (``xdt up``), faithful to how Knative serves and scales.

- :mod:`.spec` — the YAML spec: functions and platform settings;
- :mod:`.gateway` — the HTTP front door (``/invoke/<fn>``, ``/status``, ``/metrics``);
- :mod:`.activator` and :mod:`.balancer` — buffering and Knative's load-balancing policies;
- :mod:`.autoscaler` — the KPA's decision logic, pure;
- :mod:`.instances` — sidecar + function processes: start, probe, restart, drain, stop;
- :mod:`.deployment` — one function: the pieces above wired together;
- :mod:`.platform` — all functions, the scrape and tick loops.
"""

from .._core.errors import SpecError
from .autoscaler import DEFAULT_AUTOSCALER_CONFIG, AutoscalerConfig
from .embedded import Platform
from .spec import FunctionSpec, PlatformSpec, Spec, load_spec, parse_spec

__all__ = [
    "DEFAULT_AUTOSCALER_CONFIG",
    "AutoscalerConfig",
    "FunctionSpec",
    "Platform",
    "PlatformSpec",
    "Spec",
    "SpecError",
    "load_spec",
    "parse_spec",
]
