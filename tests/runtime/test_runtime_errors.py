"""Structured errors the engine proposes: reason, kind, retry-safety, phase, type, traceback,
runtime context; and the errors of loading a tool."""

from __future__ import annotations

import errno
import os
import platform
import resource
from pathlib import Path

import pytest

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.runtime import ConfigError, InvalidConfig, InvalidInput
from flnet.runtime.errors import (
    ToolLoadError,
    config_error,
    error_from_exception,
    exception_type_name,
    simple_error,
)
from flnet.runtime.loader import load_entrypoint, parse_entrypoint

R = lc.ErrorReason
K = lc.ErrorKind
S = lc.RunState


class DomainError(Exception):
    pass


def _fail_deep() -> None:
    raise DomainError("the model diverged")


def _caught(function: object) -> BaseException:
    try:
        function()  # type: ignore[operator]
    except BaseException as exc:
        return exc
    raise AssertionError("no exception")


def test_tool_exception() -> None:
    error = error_from_exception(_caught(_fail_deep), phase=S.RUN_STATE_RUNNING)
    assert error.reason == R.ERROR_REASON_TOOL_EXCEPTION
    assert error.kind == K.ERROR_KIND_TOOL
    assert error.retry_safe is False
    assert error.phase == S.RUN_STATE_RUNNING
    assert error.message == "the model diverged"
    assert error.error_type == f"{__name__}.DomainError"
    assert error.traceback.startswith("Traceback (most recent call last):")
    assert "in _fail_deep" in error.traceback
    assert 'raise DomainError("the model diverged")' in error.traceback
    assert error.traceback.rstrip().endswith("DomainError: the model diverged")
    assert error.context["python"] == platform.python_version()
    assert error.context["pid"] == str(os.getpid())
    assert error.context["hostname"]


def test_skip_frames_hides_the_callers_frames() -> None:
    exc = _caught(_fail_deep)
    full = error_from_exception(exc, phase=S.RUN_STATE_RUNNING)
    trimmed = error_from_exception(exc, phase=S.RUN_STATE_RUNNING, skip_frames=1)
    assert "in _caught" in full.traceback
    assert "in _caught" not in trimmed.traceback
    assert "in _fail_deep" in trimmed.traceback


def test_builtin_exception_types_are_short() -> None:
    assert exception_type_name(ValueError("x")) == "ValueError"
    error = error_from_exception(_caught(lambda: int("x")), phase=S.RUN_STATE_RUNNING)
    assert error.error_type == "ValueError"
    assert "invalid literal" in error.message


def test_memory_error_is_oom() -> None:
    def allocate() -> None:
        raise MemoryError

    error = error_from_exception(_caught(allocate), phase=S.RUN_STATE_RUNNING)
    assert error.reason == R.ERROR_REASON_OOM_KILLED
    assert error.kind == K.ERROR_KIND_TOOL
    assert error.error_type == "MemoryError"
    assert "out of memory" in error.message


def test_memory_error_under_an_address_space_cap_names_the_cap() -> None:
    """The process backend without a cgroup caps the address space: an allocation refused
    there killed nothing, and is not reported as OOM_KILLED."""

    def allocate() -> None:
        raise MemoryError

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (1 << 40, hard))
    try:
        error = error_from_exception(_caught(allocate), phase=S.RUN_STATE_RUNNING)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert error.reason == R.ERROR_REASON_ADDRESS_SPACE_EXHAUSTED
    assert error.kind == K.ERROR_KIND_TOOL
    assert f"address-space cap of {1 << 40} bytes" in error.message


def test_a_full_disk_names_the_runs_writable_space() -> None:
    def write() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    error = error_from_exception(_caught(write), phase=S.RUN_STATE_RUNNING)
    assert error.reason == R.ERROR_REASON_DISK_LIMIT_EXCEEDED
    assert error.kind == K.ERROR_KIND_TOOL and not error.retry_safe
    assert "filled its writable space" in error.message
    assert error.error_type == "OSError"


def test_internal_reason_is_the_platforms_and_retry_safe() -> None:
    error = error_from_exception(
        _caught(_fail_deep), phase=S.RUN_STATE_STARTED, reason=R.ERROR_REASON_INTERNAL
    )
    assert error.kind == K.ERROR_KIND_PLATFORM
    assert error.retry_safe is True
    assert error.phase == S.RUN_STATE_STARTED


def test_invalid_input_and_config_are_the_users_fault_without_a_traceback() -> None:
    def bad_input() -> None:
        raise InvalidInput("row 3 has no 'label' column", input="data")

    error = error_from_exception(_caught(bad_input), phase=S.RUN_STATE_RUNNING)
    assert (error.reason, error.kind, error.retry_safe) == (
        R.ERROR_REASON_INPUT_INVALID,
        K.ERROR_KIND_USER,
        False,
    )
    assert (error.message, error.error_type, error.traceback) == (
        "row 3 has no 'label' column",
        "InvalidInput",
        "",
    )
    assert error.context["input"] == "data"

    def bad_config() -> None:
        raise InvalidConfig("depth exceeds the data's columns", path="model.depth")

    error = error_from_exception(_caught(bad_config), phase=S.RUN_STATE_RUNNING)
    assert (error.reason, error.kind, error.traceback) == (
        R.ERROR_REASON_CONFIG_INVALID,
        K.ERROR_KIND_USER,
        "",
    )
    assert error.context["path"] == "model.depth"
    # Where nothing is named, nothing is said.
    error = error_from_exception(_caught(lambda: _raise(InvalidInput("empty"))), phase=4)
    assert "input" not in error.context


def _raise(exc: Exception) -> None:
    raise exc


def test_config_error_names_the_path_and_phase() -> None:
    error = config_error(ConfigError("optimizer.lr", "unknown key"), phase=S.RUN_STATE_PENDING)
    assert error.reason == R.ERROR_REASON_CONFIG_INVALID
    assert error.kind == K.ERROR_KIND_USER
    assert error.retry_safe is False
    assert error.phase == S.RUN_STATE_PENDING
    assert "optimizer.lr: unknown key" in error.message
    assert error.context["path"] == "optimizer.lr"


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        (R.ERROR_REASON_INPUT_INVALID, K.ERROR_KIND_USER),
        (R.ERROR_REASON_OUTPUT_MISSING, K.ERROR_KIND_TOOL),
        (R.ERROR_REASON_OUTPUT_INVALID, K.ERROR_KIND_TOOL),
        (R.ERROR_REASON_EXIT_NONZERO, K.ERROR_KIND_TOOL),
    ],
)
def test_simple_errors(reason: int, kind: int) -> None:
    error = simple_error(reason, "what happened", phase=S.RUN_STATE_RUNNING, output="model")
    assert (error.reason, error.kind, error.message) == (reason, kind, "what happened")
    assert error.context["output"] == "model"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_entrypoint_parsing() -> None:
    assert parse_entrypoint("tool.py:main") == ("tool.py", "main")
    assert parse_entrypoint("pkg/run.py:entry") == ("pkg/run.py", "entry")
    for bad in ("tool.py", ":main", "tool.py:", "tool.py:not-ident"):
        with pytest.raises(ValueError):
            parse_entrypoint(bad)


def test_load_entrypoint_imports_by_path_with_helpers(tmp_path: Path) -> None:
    _write(tmp_path / "helpers_for_loader_test.py", "VALUE = 41\n")
    _write(
        tmp_path / "mytool_loader_test.py",
        "from helpers_for_loader_test import VALUE\ndef main(ctx):\n    return VALUE + 1\n",
    )
    function = load_entrypoint(tmp_path, "mytool_loader_test.py:main")
    assert function(None) == 42


def test_missing_source_is_image_missing(tmp_path: Path) -> None:
    with pytest.raises(ToolLoadError) as caught:
        load_entrypoint(tmp_path, "absent.py:main")
    assert caught.value.error.reason == R.ERROR_REASON_IMAGE_MISSING
    assert caught.value.error.phase == S.RUN_STATE_PENDING

    _write(tmp_path / "nofunc_loader_test.py", "x = 1\n")
    with pytest.raises(ToolLoadError) as caught:
        load_entrypoint(tmp_path, "nofunc_loader_test.py:main")
    assert caught.value.error.reason == R.ERROR_REASON_IMAGE_MISSING
    assert "has no function 'main'" in caught.value.error.message


def test_source_outside_the_tool_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tool").mkdir()
    _write(tmp_path / "outside_loader_test.py", "def main(ctx): pass\n")
    with pytest.raises(ToolLoadError) as caught:
        load_entrypoint(tmp_path / "tool", "../outside_loader_test.py:main")
    assert caught.value.error.reason == R.ERROR_REASON_IMAGE_MISSING


def test_import_failure_is_a_tool_exception_with_traceback(tmp_path: Path) -> None:
    _write(tmp_path / "broken_loader_test.py", "import json\nraise RuntimeError('no GPU')\n")
    with pytest.raises(ToolLoadError) as caught:
        load_entrypoint(tmp_path, "broken_loader_test.py:main")
    error = caught.value.error
    assert error.reason == R.ERROR_REASON_TOOL_EXCEPTION
    assert error.error_type == "RuntimeError"
    assert "importing broken_loader_test.py failed: no GPU" in error.message
    assert "broken_loader_test.py" in error.traceback


def test_unusable_config_annotation_is_refused_at_load(tmp_path: Path) -> None:
    _write(
        tmp_path / "badconfig_loader_test.py",
        "from flnet.runtime import Context\ndef main(ctx: Context[int]) -> None: ...\n",
    )
    with pytest.raises(ToolLoadError) as caught:
        load_entrypoint(tmp_path, "badconfig_loader_test.py:main")
    assert caught.value.error.reason == R.ERROR_REASON_TOOL_EXCEPTION
    assert "dataclass" in caught.value.error.message
