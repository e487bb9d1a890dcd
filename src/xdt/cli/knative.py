"""``xdt knative render``: the spec as Kubernetes manifests for Knative Serving."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape

from ..knative import Rendering, render, warnings
from ..platform import load_spec

__all__ = ["add_parser", "run"]


class _Dumper(yaml.SafeDumper):
    """Every value written out where it is: no YAML anchors and aliases (``&id001``)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def add_parser(commands: Any) -> None:
    knative = commands.add_parser(
        "knative",
        help="run the spec on Knative Serving: render its manifests",
        description="Knative/Kubernetes deployment of the same spec `xdt up` runs. See "
        "docs/knative.md.",
    )
    actions = knative.add_subparsers(dest="action", required=True, metavar="ACTION")
    rendering = actions.add_parser(
        "render",
        help="write a Knative Service per function and a NetworkPolicy",
        description="Writes one Knative Service per function (the xdt sidecar in front of the "
        "function's container) and a NetworkPolicy for the object port, as YAML: one file "
        "per object in DIR, or every document to stdout. Secrets are referenced, never "
        "written: create xdt-keyring (and xdt-stores for elasticache or s3) yourself.",
    )
    rendering.add_argument("-f", "--file", type=Path, default=Path("xdt.yaml"), help="the spec")
    rendering.add_argument("-o", "--out", type=Path, default=None, help="write files here")
    rendering.add_argument(
        "--registry", required=True,
        help="where the images are pushed: REGISTRY/xdt-sidecar and REGISTRY/<function>",
    )  # fmt: skip
    rendering.add_argument("--tag", default="latest", help="the images' tag (default latest)")
    rendering.add_argument("--namespace", default="default", help="Kubernetes namespace")
    rendering.add_argument(
        "--app", default="xdt", help="a label for every pod of this spec (the NetworkPolicy's)"
    )
    rendering.set_defaults(run=run)


def run(args: argparse.Namespace, console: Console) -> int:
    spec = load_spec(args.file)
    documents = render(spec, Rendering(args.registry, args.tag, args.namespace, args.app))
    for warning in warnings(spec):
        Console(stderr=True).print(f"[yellow]note:[/yellow] {escape(warning)}", soft_wrap=True)
    if args.out is None:
        yaml.dump_all(documents, sys.stdout, Dumper=_Dumper, sort_keys=False)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for document in documents:
        kind, name = document["kind"].lower(), document["metadata"]["name"]
        path = args.out / f"{name}.{kind}.yaml"
        path.write_text(yaml.dump(document, Dumper=_Dumper, sort_keys=False))
        console.print(f"wrote {path}")
    return 0
