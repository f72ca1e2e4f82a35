"""maturin's PEP 517 backend, with the wheel's manylinux tag kept.

Built through pip (`pip wheel`, `pip install`), maturin tags a wheel `linux_x86_64`
(`--compatibility off`) unless told otherwise, so a plain `pip wheel ./integrations/buildbot`
would give a wheel no index accepts and no other machine trusts. This backend asks for the
tag in `[tool.maturin] compatibility` instead, which maturin checks against the wheel's
symbols (it refuses a tag the build does not meet). A `--compatibility` or `--zig` given
through `MATURIN_PEP517_ARGS` or `--config-settings maturin.build-args=...` still wins.
"""

from __future__ import annotations

import shlex
from typing import Any, Mapping, Optional

import maturin
from maturin import (  # noqa: F401 (the rest of the backend, unchanged)
    build_sdist,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_wheel,
)


def _with_tag(config_settings: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    args = maturin.get_maturin_pep517_args(config_settings)
    tag = maturin.get_config().get("compatibility")
    if tag and "--compatibility" not in args and "--manylinux" not in args:
        args = [*args, "--compatibility", str(tag)]
    return {**(config_settings or {}), "maturin.build-args": shlex.join(args)}


def build_wheel(
    wheel_directory: str,
    config_settings: Optional[Mapping[str, Any]] = None,
    metadata_directory: Optional[str] = None,
) -> str:
    return maturin.build_wheel(wheel_directory, _with_tag(config_settings), metadata_directory)


# An editable install (`pip install -e`) is a local build: maturin's own default applies.
build_editable = maturin.build_editable
