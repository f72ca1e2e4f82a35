"""Buildbot's in-memory build dict -> the component's event JSON (its `parse-event` input).

The input is the dict that `buildbot.reporters.utils.getDetailsForBuild` fills in, the same
one the stock HttpStatusPush serialises; the output is the data-API documents form that
README.md documents: {build, properties, buildrequest, buildset, parentbuild,
parentbuilder, builder, steps, prev_build}.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from buildbot.util import toJson

# The `builds` document's own fields. The dict also carries what getDetailsForBuild
# attached (buildrequest, url, steps, ...), which belongs in other documents.
BUILD_FIELDS = (
    "buildid",
    "number",
    "builderid",
    "buildrequestid",
    "workerid",
    "masterid",
    "started_at",
    "complete_at",
    "locks_duration_s",
    "complete",
    "state_string",
    "results",
)


def _log(log: dict[str, Any]) -> dict[str, Any]:
    out = dict(log)
    content = out.get("content")
    # The data API gives {logid, firstline, content}; the component takes the text and
    # rebuilds that object itself.
    if isinstance(content, dict):
        out["content"] = content.get("content", "")
    return out


def _step(step: dict[str, Any]) -> dict[str, Any]:
    out = dict(step)
    out["logs"] = [_log(log) for log in step.get("logs", [])]
    return out


def event_documents(build: dict[str, Any]) -> dict[str, Any]:
    """The documents of one event, from a build dict filled with want_properties=True."""
    return {
        "build": {k: build[k] for k in BUILD_FIELDS},
        # {name: (value, source)}; always passed, as the branches/schedulers filters read
        # it. The component leaves it out of the payload unless wantProperties.
        "properties": build.get("properties", {}),
        "buildrequest": build["buildrequest"],
        "buildset": build["buildset"],
        "parentbuild": build.get("parentbuild"),
        "parentbuilder": build.get("parentbuilder"),
        "builder": build["builder"],
        "steps": [_step(s) for s in build.get("steps", [])],
        "prev_build": build.get("prev_build"),
    }


def dumps(documents: dict[str, Any]) -> str:
    # toJson is what Buildbot's own HTTP client uses: datetimes become epoch integers.
    return json.dumps(documents, default=toJson)


def config_json(options: dict[str, Optional[Any]]) -> str:
    """The `parse-config` input: seed option names; unset options are left to the component."""
    return json.dumps({k: v for k, v in options.items() if v is not None})
