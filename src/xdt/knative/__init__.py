"""xdt on Knative Serving: the spec ``xdt up`` runs, rendered as manifests for a cluster
(:mod:`.render`), with the sidecar in its Knative mode (:mod:`xdt.sidecar.knative`) and the
container build files in ``deploy/knative/``. See ``docs/knative.md``."""

from __future__ import annotations

from .render import Rendering, render, warnings

__all__ = ["Rendering", "render", "warnings"]
