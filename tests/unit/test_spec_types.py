"""handcar.spec.types against the runtime-spec's own JSON schemas (v1.3.0), so that the typed
model cannot silently fall behind the spec: every property the schema defines for a Linux
config, the state and the features has a key, the required keys agree (but for the listed,
reasoned exceptions), enumerations hold every value the schema allows, and scalars have the
schema's type.

The schemas are read from the shared notes (`shared/oci-runtime-spec/v1.3.0/schema`, found
beside the repository or one of its parents, or at $HANDCAR_OCI_SCHEMA), never copied into
the project; without them the schema tests skip.

The model must also cost nothing at run time: no module imports it outside `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
import json
import os
import typing
from pathlib import Path
from typing import Any

import pytest

from handcar.spec import types as spec_types

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
SCHEMA_PARTS = ("shared", "oci-runtime-spec", "v1.3.0", "schema")
Json = dict[str, Any]  # a schema node, read from the spec's files


def _schema_dir() -> Path | None:
    override = os.environ.get("HANDCAR_OCI_SCHEMA")
    if override:
        return Path(override)
    for parent in REPO.parents:
        candidate = parent.joinpath(*SCHEMA_PARTS)
        if candidate.is_dir():
            return candidate
    return None


SCHEMA_DIR = _schema_dir()
needs_schema = pytest.mark.skipif(
    SCHEMA_DIR is None or not (SCHEMA_DIR / "config-schema.json").is_file(),
    reason="the runtime-spec v1.3.0 JSON schemas (../shared/oci-runtime-spec/v1.3.0/schema) "
    "are not on this machine; set HANDCAR_OCI_SCHEMA to their directory",
)

# Config sections of other platforms: handcar runs Linux containers only.
OTHER_PLATFORMS = {"Spec": {"windows", "solaris", "vm", "zos", "freebsd"}}

# Keys the schema requires that handcar's validation accepts without, with handcar's default.
NOT_REQUIRED_BY_HANDCAR = {
    ("Spec", "ociVersion"),  # runc does not insist either; the state falls back to 1.2.0
    ("Process", "cwd"),  # "/"
    ("Box", "height"),  # 0: the pty keeps its size
    ("Box", "width"),
    ("LinuxPids", "limit"),  # no limit
    # Validated present, but reached as `config.get("root") or {}`: Required would make that
    # {} ill-typed.
    ("Root", "path"),
}
# Keys handcar always has (validated, or always written) that the schema leaves optional.
REQUIRED_BY_HANDCAR = {
    ("LinuxThrottleDevice", "rate"),  # a throttle without a rate means nothing
    ("State", "pid"),  # 0 once stopped
    ("RuncState", "pid"),
    ("RuncState", "rootfs"),  # runc's fields, always written
    ("RuncState", "created"),
}


class Loader:
    """The schema files, with `$ref`s resolved across them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files: dict[str, Json] = {}

    def file(self, name: str) -> Json:
        if name not in self.files:
            self.files[name] = json.loads((self.directory / name).read_text())
        return self.files[name]

    def resolve(self, node: Json, current: str) -> tuple[Json, str]:
        """Follow `$ref` (and merge `allOf`) until a node with its own content is left."""
        while "$ref" in node:
            ref = node["$ref"]
            name, _, pointer = ref.partition("#")
            name = name or current
            target = self.file(name)
            for part in pointer.strip("/").split("/"):
                target = target[part] if part else target
            rest = {k: v for k, v in node.items() if k != "$ref"}
            node, current = {**target, **rest} if rest.keys() - {"type"} else target, name
        if "allOf" in node:
            merged: Json = {"type": "object", "properties": {}, "required": []}
            for part in node["allOf"]:
                resolved, _ = self.resolve(part, current)
                merged["properties"].update(resolved.get("properties", {}))
                merged["required"] += resolved.get("required", [])
            node = merged
        if len(node.get("anyOf", ())) == 1:
            return self.resolve(node["anyOf"][0], current)
        return node, current


def _strip(annotation: Any) -> object:
    """The type inside Required[...] / NotRequired[...]."""
    if typing.get_origin(annotation) in (typing.Required, typing.NotRequired):
        return typing.get_args(annotation)[0]
    return annotation


def _is_typeddict(annotation: Any) -> bool:
    return isinstance(annotation, type) and typing.is_typeddict(annotation)


SCALARS = {"string": str, "integer": int, "boolean": bool}


class Comparison:
    """Walks a schema node and a type side by side; collects every disagreement."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self.problems: list[str] = []
        self.seen: set[tuple[str, str]] = set()

    def node(self, schema: Json, current: str, annotation: Any, at: str) -> None:
        schema, current = self.loader.resolve(schema, current)
        annotation = _strip(annotation)
        if "properties" in schema:
            self.an_object(schema, current, annotation, at)
        elif schema.get("type") == "array":
            self.an_array(schema, current, annotation, at)
        elif schema.get("type") == "object":
            self.a_map(schema, current, annotation, at)
        elif "enum" in schema:
            self.an_enum(schema, annotation, at)
        elif schema.get("type") in SCALARS:
            expected = SCALARS[str(schema["type"])]
            if typing.get_origin(annotation) is typing.Literal:  # a string with a pattern
                annotation = type(typing.get_args(annotation)[0])
            if annotation is not expected:
                self.problems.append(f"{at}: {annotation} is not the schema's {schema['type']}")

    def an_object(self, schema: Json, current: str, annotation: Any, at: str) -> None:
        if not _is_typeddict(annotation):
            self.problems.append(f"{at}: an object in the schema, {annotation} in the model")
            return
        name = annotation.__name__
        key = (name, json.dumps(schema, sort_keys=True))
        if key in self.seen:
            return
        self.seen.add(key)
        hints = typing.get_type_hints(annotation, include_extras=True)
        properties: dict[str, Json] = schema["properties"]
        left_out = OTHER_PLATFORMS.get(name, set())
        for prop in sorted(properties.keys() - hints.keys() - left_out):
            self.problems.append(f"{at}.{prop}: in the schema, missing from {name}")
        required_schema = set(schema.get("required", []))
        required_model: frozenset[str] = annotation.__required_keys__
        for prop in sorted(required_schema - required_model):
            if (name, prop) not in NOT_REQUIRED_BY_HANDCAR:
                self.problems.append(f"{at}.{prop}: required by the schema, not in {name}")
        for prop in sorted(required_model - required_schema):
            if (name, prop) not in REQUIRED_BY_HANDCAR:
                self.problems.append(f"{at}.{prop}: Required in {name}, optional in the schema")
        for prop, sub in properties.items():
            if prop in hints:
                self.node(sub, current, hints[prop], f"{at}.{prop}")

    def an_array(self, schema: Json, current: str, annotation: Any, at: str) -> None:
        if typing.get_origin(annotation) is not list:
            self.problems.append(f"{at}: an array in the schema, {annotation} in the model")
            return
        items = schema.get("items")
        if isinstance(items, dict):
            self.node(items, current, typing.get_args(annotation)[0], f"{at}[]")

    def a_map(self, schema: Json, current: str, annotation: Any, at: str) -> None:
        """An object with free keys: additionalProperties or patternProperties."""
        if typing.get_origin(annotation) is not dict:
            self.problems.append(f"{at}: a map in the schema, {annotation} in the model")
            return
        key_type, value_type = typing.get_args(annotation)
        assert key_type is str, at
        values = schema.get("additionalProperties")
        if values is None:
            patterns = schema.get("patternProperties") or {}
            assert isinstance(patterns, dict)
            values = next(iter(patterns.values()), None)
        if isinstance(values, dict):
            self.node(values, current, value_type, f"{at}.*")

    def an_enum(self, schema: Json, annotation: Any, at: str) -> None:
        allowed: list[str] = schema["enum"]
        if typing.get_origin(annotation) is not typing.Literal:
            if annotation is not str:
                self.problems.append(f"{at}: an enum in the schema, {annotation} in the model")
            return  # a plain str holds every value
        missing = set(allowed) - set(typing.get_args(annotation))
        if missing:
            self.problems.append(f"{at}: the model's Literal lacks {sorted(missing)}")


def _compare(schema_file: str, pointer: tuple[str, ...], model: type) -> list[str]:
    assert SCHEMA_DIR is not None
    loader = Loader(SCHEMA_DIR)
    node = loader.file(schema_file)
    for part in pointer:
        node = node[part]
    comparison = Comparison(loader)
    comparison.node(node, schema_file, model, model.__name__)
    return comparison.problems


@needs_schema
def test_the_config_model_covers_the_linux_config_schema() -> None:
    assert _compare("config-schema.json", (), spec_types.Spec) == []


@needs_schema
def test_every_top_level_and_linux_property_has_a_key() -> None:
    """The plain statement of the guarantee, whatever the recursive walk above does."""
    assert SCHEMA_DIR is not None
    top = json.loads((SCHEMA_DIR / "config-schema.json").read_text())["properties"]
    linux = json.loads((SCHEMA_DIR / "config-linux.json").read_text())["linux"]["properties"]
    assert set(top) - OTHER_PLATFORMS["Spec"] <= set(spec_types.Spec.__annotations__)
    assert set(linux) <= set(spec_types.Linux.__annotations__)


@needs_schema
def test_the_state_models_cover_the_state_schema() -> None:
    assert _compare("state-schema.json", (), spec_types.State) == []
    assert _compare("state-schema.json", (), spec_types.RuncState) == []


@needs_schema
def test_the_features_model_covers_the_features_schema() -> None:
    assert _compare("features-schema.json", (), spec_types.Features) == []


class Loose(typing.TypedDict, total=False):
    """A namespace model behind the schema: `type` is not Required, and lacks values."""

    type: typing.Literal["pid", "mount"]
    path: str


class Short(typing.TypedDict, total=False):
    """A linux model behind the schema: only namespaces."""

    namespaces: list[Loose]


@needs_schema
def test_the_comparison_catches_a_model_behind_the_schema() -> None:
    """The walk fails when the model lacks a key, a requirement or an enum value."""
    problems = _compare("config-linux.json", ("linux",), Short)
    assert "Short.devices: in the schema, missing from Short" in problems
    assert "Short.namespaces[].type: required by the schema, not in Loose" in problems
    assert any(p.startswith("Short.namespaces[].type: the model's Literal lacks") for p in problems)


# Modules for type checking only; they may import each other freely.
TYPING_MODULES = ("handcar.spec.types", "handcar.cgroups.types")


def _typing_only_violations(module: str, root: Path = SRC) -> list[str]:
    """Imports of `module` that would run: anywhere but under `if TYPE_CHECKING:`."""
    problems = []
    for path in sorted((root / "handcar").rglob("*.py")):
        if ".".join(path.relative_to(root).with_suffix("").parts) in TYPING_MODULES:
            continue
        tree = ast.parse(path.read_text())
        guarded: set[int] = set()
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.If)
                and isinstance(node.test, ast.Name)
                and node.test.id == "TYPE_CHECKING"
            ):
                guarded.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            if module in names and id(node) not in guarded:
                problems.append(f"{path.relative_to(root)}:{node.lineno} imports {module}")
    return problems


@pytest.mark.parametrize("module", TYPING_MODULES)
def test_the_typing_modules_are_imported_for_type_checking_only(module: str) -> None:
    assert _typing_only_violations(module) == []


def test_the_guard_check_catches_a_run_time_import(tmp_path: Path) -> None:
    """An import that would run is caught; the same import under TYPE_CHECKING is not."""
    package = tmp_path / "handcar"
    package.mkdir()
    (package / "good.py").write_text(
        "TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from handcar.spec.types import Spec\n"
    )
    (package / "bad.py").write_text("def f() -> None:\n    from handcar.spec import types\n")
    found = _typing_only_violations("handcar.spec.types", tmp_path)
    assert found == ["handcar/bad.py:2 imports handcar.spec.types"]
