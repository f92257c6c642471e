"""Loading a composition: reading YAML or JSON safely, validating it against the models and the
preset book (every problem named by its field path), and the path policy for its source.
Run as a module, it prints the JSON Schema of a composition (`make schema`)."""

from __future__ import annotations

import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vexport_pipeline.core.errors import InputError, ManifestError
from vexport_pipeline.core.settings import MediaPolicy, current

from .composition import (
    MAX_MANIFEST_BYTES,
    Audio,
    Composition,
    Delivery,
    Retention,
    Segment,
    Target,
    Transitions,
    Validation,
)
from .presets import PresetBook


def _all_field_names() -> list[str]:
    names: set[str] = set()
    for model in (Composition, Segment, Transitions, Audio, Target, Delivery, Retention, Validation):
        names.update(model.model_fields)
    return sorted(names)


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _messages(err: ValidationError) -> list[str]:
    out = []
    for e in err.errors():
        path, msg = _loc(e["loc"]), e["msg"]
        if e["type"] == "extra_forbidden":
            key = str(e["loc"][-1])
            guess = difflib.get_close_matches(key, _all_field_names(), n=1)
            msg = "unknown key" + (f" (did you mean {guess[0]!r}?)" if guess else "")
        elif e["type"] == "missing":
            msg = "is required"
        msg = msg.removeprefix("Value error, ")
        out.append(f"{path}: {msg}")
    return out


def slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")
    s = s[:63] or "export"
    return s if s[0].isalnum() else "x" + s[:62]


def parse_composition(data: Any, *, file: str | None = None, default_id: str | None = None) -> Composition:
    """Validate a manifest's data; raise ManifestError listing every problem with its field path."""
    if not isinstance(data, dict):
        raise ManifestError([f"(top level): expected a mapping of keys, got {type(data).__name__}"], file=file)
    try:
        comp = Composition.model_validate(data)
    except ValidationError as err:
        raise ManifestError(_messages(err), file=file) from None
    if problems := comp.problems():
        raise ManifestError(problems, file=file)
    book = PresetBook.load()
    problems = [p for i, t in enumerate(comp.targets) if (p := book.check_target(t, f"targets[{i}]"))]
    if problems:
        raise ManifestError(problems, file=file)
    if comp.id is None:
        comp = comp.model_copy(update={"id": slug(default_id or "export")})
    return comp


def read_manifest(path: Path) -> Any:
    """Read YAML or JSON; refuse unreadable, huge or non-text files with the file named."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read manifest: {exc.strerror}", where=str(path)) from None
    if size > MAX_MANIFEST_BYTES:
        raise InputError(f"manifest is {size} bytes, more than {MAX_MANIFEST_BYTES}", where=str(path))
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(
            f"not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {exc}", where=str(path)
        ) from None


def load_composition(path: Path) -> Composition:
    path = Path(path)
    return parse_composition(read_manifest(path), file=str(path), default_id=path.stem)


def resolve_source(comp: Composition, base_dir: Path, policy: MediaPolicy | None = None) -> Path:
    """The source as an absolute real path inside an allowed root; refuse URLs and escapes.

    A relative source is resolved against the manifest's folder and must stay inside it;
    an absolute one must lie under a configured media root. FFmpeg is never given a URL.
    """
    policy = policy or current().policy
    raw = comp.source
    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]+):", raw)
    if scheme and len(scheme.group(1)) > 1:
        if scheme.group(1).lower() == "s3":
            raise InputError(
                "s3:// sources are not supported yet; copy the file under a media root",
                where="source",
                code="source_unsupported",
            )
        raise InputError(
            f"{scheme.group(1)}: URLs are not allowed; give a file path", where="source", code="source_not_allowed"
        )
    base_dir = Path(base_dir).resolve()
    candidate = Path(raw).expanduser()
    if candidate.is_absolute():
        allowed = policy.roots
        resolved = candidate.resolve()
    else:
        allowed = (base_dir, *policy.roots)
        resolved = (base_dir / candidate).resolve()
    if not any(resolved.is_relative_to(root) for root in allowed):
        roots = ", ".join(str(r) for r in allowed)
        raise InputError(
            f"{raw!r} is outside the allowed media folders ({roots}); set VEXPORT_MEDIA_ROOTS to allow more",
            where="source",
            code="source_not_allowed",
        )
    if not resolved.is_file():
        raise InputError(
            f"{raw!r} does not exist or is not a file (looked at {resolved})", where="source", code="source_missing"
        )
    return resolved


def json_schema() -> dict:
    schema = Composition.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "vexport composition"
    return schema


if __name__ == "__main__":
    json.dump(json_schema(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
