"""tool.yaml with an image build context, through toolspec (pure: no Docker)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from flnet.api.control.v1 import tool_pb2 as tp
from flnet.control.tools import prepare_tool_version
from flnet.toolspec import ToolSpecError, load_tool_spec
from tests.conftest import EXAMPLES

DIGEST = "sha256:" + "ab" * 32


def write_tool(where: Path, image: str | None, entrypoint: str = "tool.py:main") -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "tool.py").write_text("def main(ctx):\n    pass\n")
    text = f"""\
        name: tiny
        version: 1.0.0+build.7
        entrypoint: {entrypoint}
        config_schema: {{type: object}}
        outputs: [{{name: result, required: true}}]
        timeouts: {{deadline_seconds: 60}}
        """
    if image is not None:
        text += f"image: {image}\n"
    (where / "tool.yaml").write_text(textwrap.dedent(text))
    return where


@pytest.mark.parametrize("tool", ["csv_stats", "logreg"])
def test_the_examples_name_their_directory_as_build_context(tool: str) -> None:
    spec = load_tool_spec(EXAMPLES / tool)
    assert spec.image_build is not None
    assert spec.image_build.context == (EXAMPLES / tool).resolve()
    # Registered as they are, they still run from source (the process backend): their
    # directory's files, uploaded as an archive the version names once it is.
    assert spec.version.WhichOneof("artifact") == "source"
    assert spec.directory == (EXAMPLES / tool).resolve()
    assert spec.version.source.archive == ""


def test_a_build_context_round_trips_into_an_image_version(tmp_path: Path) -> None:
    spec = load_tool_spec(write_tool(tmp_path / "tiny", '{build: "."}'))
    assert spec.image_build is not None and spec.image_build.context == tmp_path / "tiny"
    assert spec.entrypoint == "tool.py:main"
    version = spec.with_image("flnet/tiny:1.0.0_build.7", DIGEST)
    assert version.WhichOneof("artifact") == "image"
    assert version.image == tp.ContainerImage(
        reference="flnet/tiny:1.0.0_build.7", digest=DIGEST, entrypoint="tool.py:main"
    )
    # Everything else of the contract is the source version's.
    source = tp.ToolVersion()
    source.CopyFrom(version)
    source.source.CopyFrom(spec.version.source)
    assert source == spec.version
    assert spec.version.WhichOneof("artifact") == "source"  # not changed in place
    # The control plane accepts it as an image version.
    prepared = prepare_tool_version("default", "tiny", version)
    assert prepared.image.digest == DIGEST
    assert prepared.name == "tenants/default/tools/tiny/versions/1.0.0+build.7"


def test_the_build_context_may_be_a_subdirectory(tmp_path: Path) -> None:
    tool = write_tool(tmp_path / "tiny", '{build: "src"}')
    write_tool(tool / "src", None)
    spec = load_tool_spec(tool / "tool.yaml")
    assert spec.image_build is not None and spec.image_build.context == tool / "src"


def test_no_image_key_means_source_only(tmp_path: Path) -> None:
    assert load_tool_spec(write_tool(tmp_path / "tiny", None)).image_build is None


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ('"."', "must be a mapping {build: DIR}"),
        ("{}", "must be a mapping {build: DIR}"),
        ('{build: ".", dockerfile: "x"}', "must be a mapping {build: DIR}"),
        ("{build: 3}", "must be a mapping {build: DIR}"),
        ('{build: ""}', "must be a mapping {build: DIR}"),
        ('{build: "missing"}', "image.build 'missing' is not a directory"),
        ('{build: "empty"}', "entrypoint 'tool.py:main' is not in the image build context"),
    ],
)
def test_bad_image_sections_are_named(tmp_path: Path, image: str, message: str) -> None:
    tool = write_tool(tmp_path / "tiny", image)
    (tool / "empty").mkdir()
    with pytest.raises(ToolSpecError, match=message.replace("{", r"\{").replace(".", r"\.")):
        load_tool_spec(tool)


def test_resources_are_read_with_their_scratch_space(tmp_path: Path) -> None:
    tool = write_tool(tmp_path / "tiny", None)
    with (tool / "tool.yaml").open("a") as yaml:
        yaml.write("resources: {memory_bytes: 1048576, pids: 8, scratch_bytes: 4096}\n")
    resources = load_tool_spec(tool).version.resources
    assert resources == tp.Resources(memory_bytes=1048576, pids=8, scratch_bytes=4096)
