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
from vexport_pipeline.core.files import read_text_file
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


def field_problems(err: ValidationError, names: list[str] | None = None) -> list[str]:
    """Each error as `field.path: message`; an unknown key gets the closest of `names` (default: every
    composition field) as a guess."""
    out = []
    for e in err.errors():
        path, msg = _loc(e["loc"]), e["msg"]
        if e["type"] == "extra_forbidden":
            key = str(e["loc"][-1])
            guess = difflib.get_close_matches(key, names or _all_field_names(), n=1)
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
        raise ManifestError(field_problems(err), file=file) from None
    limits = current()
    caps = [
        f"{name}: {len(items)} {name}, more than the {cap} allowed ({env})"
        for name, items, cap, env in (
            ("segments", comp.segments or [], limits.max_segments, "VEXPORT_MAX_SEGMENTS"),
            ("targets", comp.targets, limits.max_targets, "VEXPORT_MAX_TARGETS"),
        )
        if len(items) > cap
    ]
    if problems := caps or comp.problems():
        raise ManifestError(problems, file=file)
    book = PresetBook.load()
    problems = [p for i, t in enumerate(comp.targets) if (p := book.check_target(t, f"targets[{i}]"))]
    if problems:
        raise ManifestError(problems, file=file)
    if comp.id is None:
        comp = comp.model_copy(update={"id": slug(default_id or "export")})
    return comp


MAX_DEPTH = 32  # a composition nests four deep; anything far deeper is an attack on the parser
MAX_NODES = 200_000  # values after YAML aliases are expanded (a "billion laughs" file stops here)


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (the last would silently win)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (line {seen[key] + 1} and line {key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            if isinstance(key, (str, int, float, bool)):
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _unique_pairs(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if dup := next((k for k in keys if keys.count(k) > 1), None):
        raise ValueError(f"key {dup!r} is given twice")
    return dict(pairs)


def _check_shape(data: Any, where: str) -> None:
    """Refuse data nested deeper than MAX_DEPTH or with more than MAX_NODES values (counted with repeats,
    so aliases that multiply a structure are caught before anything walks it)."""
    count, stack = 0, [(data, 0)]
    while stack:
        item, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH:
            raise InputError(
                f"manifest is nested more than {MAX_DEPTH} levels deep", where=where, code="manifest_invalid"
            )
        if count > MAX_NODES:
            raise InputError(f"manifest holds more than {MAX_NODES} values", where=where, code="manifest_invalid")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for kv in item.items() for v in kv)
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def read_manifest(path: Path) -> Any:
    """Read YAML or JSON; refuse unreadable, huge, non-regular or non-text files, duplicate keys, deep
    nesting and alias bombs, with the file named."""
    path = Path(path)
    text = read_text_file(path, MAX_MANIFEST_BYTES, "manifest")
    is_json = path.suffix.lower() == ".json"
    try:
        data = json.loads(text, object_pairs_hook=_unique_pairs) if is_json else yaml.load(text, _UniqueKeyLoader)
    except RecursionError:
        raise InputError("manifest is nested too deeply to read", where=str(path), code="manifest_invalid") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise InputError(
            f"not valid {'JSON' if is_json else 'YAML'}: {exc}", where=str(path), code="manifest_invalid"
        ) from None
    _check_shape(data, str(path))
    return data


def load_composition(path: Path) -> Composition:
    path = Path(path)
    return parse_composition(read_manifest(path), file=str(path), default_id=path.stem)


def resolve_source(comp: Composition, base_dir: Path, policy: MediaPolicy | None = None) -> Path:
    """The source as an absolute real path inside an allowed root (see `resolve_path`), or an `s3://` source
    fetched into the cache."""
    if comp.source.startswith("s3://"):
        from vexport_pipeline.core.intake.s3source import fetch
        from vexport_pipeline.core.settings import destinations

        return fetch(comp.source, destinations(), current().paths.cache)
    return resolve_path(comp.source, base_dir, policy or current().policy)


def resolve_path(raw: str, base_dir: Path, policy: MediaPolicy, *, where: str = "source") -> Path:
    """An existing file as an absolute real path inside an allowed root; refuse URLs and escapes.

    A relative path is resolved against `base_dir` (the manifest's folder) and must stay inside it;
    an absolute one must lie under a configured media root. FFmpeg is never given a URL.
    """
    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]+):", raw)
    if scheme and len(scheme.group(1)) > 1:
        raise InputError(
            f"{scheme.group(1)}: URLs are not allowed; give a file path", where=where, code="source_not_allowed"
        )
    try:
        resolved, allowed = _resolve(raw, base_dir, policy)
    except (OSError, ValueError, RuntimeError) as exc:  # NUL byte, a name too long, a symlink loop
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(
            f"{raw[:200]!r} is not a usable path: {reason}", where=where, code="source_not_allowed"
        ) from None
    if not any(resolved.is_relative_to(root) for root in allowed):
        roots = ", ".join(str(r) for r in allowed)
        raise InputError(
            f"{raw!r} is outside the allowed media folders ({roots}); set VEXPORT_MEDIA_ROOTS to allow more",
            where=where,
            code="source_not_allowed",
        )
    try:
        is_file = resolved.is_file()
    except OSError:
        is_file = False
    if not is_file:
        raise InputError(
            f"{raw!r} does not exist or is not a file (looked at {resolved})", where=where, code="source_missing"
        )
    return resolved


def _resolve(raw: str, base_dir: Path, policy: MediaPolicy) -> tuple[Path, tuple[Path, ...]]:
    if "\0" in raw:
        raise ValueError("the path holds a NUL byte")
    base_dir = Path(base_dir).resolve()
    candidate = Path(raw).expanduser()
    if candidate.is_absolute():
        return candidate.resolve(strict=False), tuple(policy.roots)
    return (base_dir / candidate).resolve(strict=False), (base_dir, *policy.roots)


def json_schema() -> dict:
    schema = Composition.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "vexport composition"
    return schema


if __name__ == "__main__":
    json.dump(json_schema(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
