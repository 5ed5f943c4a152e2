"""Grammar-constrained output for small local models, chosen per LM.

Why: SmolLM2-135M follows DSPy's ChatAdapter format (``[[ ## field ## ]]``) only about two times in
three. Sent a JSON schema, llama.cpp compiles it into a grammar and the model can only emit a JSON
object with exactly the signature's output fields and types, which DSPy's JSONAdapter then parses.

DSPy chooses one adapter for all LMs (``dspy.settings.adapter``). :class:`AutoAdapter` is a
ChatAdapter that hands calls to :class:`SchemaJSONAdapter` only when the LM asks for a schema (an
LM or engine with ``constrain_json_schema = True``, like the embedded model); every other LM gets
exactly DSPy's default behaviour. `configure_lm` installs it.
"""

from __future__ import annotations

import copy
import json
import re
import textwrap
from functools import lru_cache
from typing import Annotated, Any, Literal, get_args, get_origin

import dspy
import pydantic
from dspy.adapters.chat_adapter import ChatAdapter
from dspy.adapters.json_adapter import JSONAdapter

from ..engine.streaming import follow_listeners

__all__ = ["AutoAdapter", "SchemaJSONAdapter", "output_json_schema", "response_format_for", "wants_json_schema"]


def wants_json_schema(lm: Any) -> bool:
    """Whether `lm` (or its DSPy engine) asks for grammar-constrained JSON output."""
    for owner in (lm, getattr(lm, "engine", None)):
        flag = getattr(owner, "constrain_json_schema", None)
        if flag is not None:
            return bool(flag)
    return False


def _close_objects(node: Any) -> None:
    """Make every object schema strict: all properties required, no extra properties."""
    if isinstance(node, list):
        for item in node:
            _close_objects(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "object" and isinstance(node.get("properties"), dict):
        node["required"] = list(node["properties"])
        node["additionalProperties"] = False
    for key, value in node.items():
        if key in {"properties", "$defs", "definitions"} and isinstance(value, dict):
            for sub in value.values():
                _close_objects(sub)
        elif isinstance(value, (dict, list)) and key != "required":
            _close_objects(value)


def _has_open_mapping(node: Any) -> bool:
    """An object with free keys (``dict[str, X]``, bare ``dict``) has no strict schema."""
    if isinstance(node, list):
        return any(_has_open_mapping(item) for item in node)
    if not isinstance(node, dict):
        return False
    if node.get("type") == "object" and not isinstance(node.get("properties"), dict):
        return True
    if isinstance(node.get("additionalProperties"), dict) or node.get("additionalProperties") is True:
        return True
    return any(_has_open_mapping(value) for key, value in node.items() if key != "required")


def _build_schema(fields: tuple[tuple[str, Any], ...], nonempty_strings: bool) -> dict[str, Any]:
    # Internal attribute names with aliases: an output field may be called `json`, `schema`, `copy`...
    model = pydantic.create_model(
        "Outputs",
        __config__=pydantic.ConfigDict(extra="forbid", populate_by_name=True),
        **{f"f{i}": (annotation, pydantic.Field(..., alias=name)) for i, (name, annotation) in enumerate(fields)},
    )
    schema = model.model_json_schema(by_alias=True)
    schema.pop("title", None)
    if _has_open_mapping(schema):
        raise ValueError("an output field is an open mapping; no strict schema exists")
    _close_objects(schema)
    if nonempty_strings:
        for prop in schema.get("properties", {}).values():
            if prop.get("type") == "string" and "enum" not in prop and "const" not in prop:
                prop.setdefault("minLength", 1)
    return schema


_cached_schema = lru_cache(maxsize=512)(_build_schema)


def _annotation_with_constraints(field: Any) -> Any:
    """The field's type with its pydantic constraints (``Field(ge=0, le=100)``, ``max_length``...) re-attached.

    DSPy keeps them in ``FieldInfo.metadata``; carried into the schema, llama.cpp's grammar enforces them.
    """
    metadata = tuple(getattr(field, "metadata", ()) or ())
    return Annotated[(field.annotation, *metadata)] if metadata else field.annotation


def output_json_schema(signature: Any, *, nonempty_strings: bool = True) -> dict[str, Any]:
    """Strict JSON schema of a signature's output fields, in declaration order.

    `bool`, `int`, `float`, `list[...]`, `Literal[...]`, Optional and pydantic models map to their JSON
    types. With `nonempty_strings`, plain `str` outputs must have at least one character: a tiny model
    otherwise often answers ``""``, which parses but is useless.
    """
    fields = tuple((name, _annotation_with_constraints(field)) for name, field in signature.output_fields.items())
    try:
        schema = _cached_schema(fields, nonempty_strings)
    except TypeError as exc:  # an unhashable annotation: build without the cache
        if "unhashable" not in str(exc):
            raise
        schema = _build_schema(fields, nonempty_strings)
    return copy.deepcopy(schema)


def _schema_name(signature: Any) -> str:
    name = re.sub(r"[^A-Za-z0-9_\-]", "_", getattr(signature, "__name__", "") or "Outputs")[:64]
    return name or "Outputs"


def response_format_for(signature: Any, *, nonempty_strings: bool = True) -> dict[str, Any]:
    """The OpenAI-style ``response_format`` for a signature (``json_schema``, strict).

    Falls back to ``{"type": "json_object"}`` when the outputs have no closed schema (e.g. ``dict[str, Any]``).
    """
    try:
        schema = output_json_schema(signature, nonempty_strings=nonempty_strings)
    except (TypeError, ValueError, pydantic.PydanticSchemaGenerationError, pydantic.PydanticInvalidForJsonSchema):
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": _schema_name(signature), "schema": schema, "strict": True}}


def _describe_type(annotation: Any) -> str:
    """A short, plain-words type name a small model understands ("integer", "true or false", ...)."""
    from dspy.adapters.utils import get_annotation_name

    origin, args = get_origin(annotation), get_args(annotation)
    simple = {str: "string", int: "integer", float: "number", bool: "true or false"}
    if annotation in simple:
        return simple[annotation]
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) if isinstance(a, str) else str(a) for a in args)
    if origin in (list, tuple, set, frozenset) and len(args) >= 1 and args[0] in simple:
        return f"list of {simple[args[0]]}s" if args[0] is not bool else "list of true/false values"
    return get_annotation_name(annotation)


def _field_desc(name: str, field: Any) -> str:
    extra = field.json_schema_extra or {}
    desc = str(extra.get("desc") or "").strip()
    return "" if desc in ("", f"${{{name}}}") else desc


class SchemaJSONAdapter(JSONAdapter):
    """DSPy's JSONAdapter that always sends a strict ``json_schema`` response format.

    DSPy's own JSONAdapter sends one only when the LM's catalogue entry says it supports schemas; a
    local server's model is in no catalogue. A ``response_format`` given explicitly by the caller wins.

    With `compact_prompt` (default) the prompt is written for small models: the instructions, one line
    naming the JSON keys and their types, and ``name: value`` inputs. DSPy's stock JSON prompt shows a
    template (``"answer": "{answer}"``) that a 135M model copies verbatim instead of answering. The
    grammar, not the prompt, guarantees the format, so the prompt can spend its words on the task.
    """

    def __init__(self, *args: Any, nonempty_strings: bool = True, compact_prompt: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nonempty_strings = nonempty_strings
        self.compact_prompt = compact_prompt

    def _prepare_response_format(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any) -> None:
        if lm_kwargs.get("response_format") is None:
            lm_kwargs["response_format"] = response_format_for(signature, nonempty_strings=self.nonempty_strings)

    # --- compact prompt ------------------------------------------------------------------------

    def format_system_message(self, signature: Any) -> str:
        if not self.compact_prompt:
            return super().format_system_message(signature)
        parts = [textwrap.dedent(signature.instructions or "").strip()]
        described = [f"`{n}` ({_field_desc(n, f)})" for n, f in signature.input_fields.items() if _field_desc(n, f)]
        if described:
            parts.append("You are given " + ", ".join(described) + ".")
        keys = []
        for name, field in signature.output_fields.items():
            desc = _field_desc(name, field)
            keys.append(f"`{name}` ({_describe_type(field.annotation)}{'; ' + desc if desc else ''})")
        parts.append("Reply with a JSON object with the keys: " + ", ".join(keys) + ".")
        return "\n\n".join(p for p in parts if p)

    def format_user_message_content(
        self,
        signature: Any,
        inputs: dict[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        if not self.compact_prompt:
            return super().format_user_message_content(signature, inputs, prefix, suffix, main_request)
        from dspy.adapters.utils import format_field_value

        lines = [prefix] if prefix else []
        for name, field in signature.input_fields.items():
            if name in inputs:
                value = format_field_value(field_info=field, value=inputs.get(name))
                lines.append(f"{name}:\n{value}" if "\n" in value or len(value) > 80 else f"{name}: {value}")
        if suffix:
            lines.append(suffix)
        return "\n\n".join(lines).strip()


_PLAIN_CHAT, _PLAIN_JSON = ChatAdapter(), JSONAdapter()  # what DSPy's stream listeners know by name


class AutoAdapter(ChatAdapter):
    """ChatAdapter for every LM, except LMs that ask for a JSON schema, which get :class:`SchemaJSONAdapter`.

    Installed as ``dspy.settings.adapter`` by `configure_lm`, so switching between the embedded model
    and a hosted one (or mixing them with ``dspy.context(lm=...)``) needs no adapter change.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.json_adapter = SchemaJSONAdapter(callbacks=self.callbacks)

    def _tell_stream_listeners(self, lm: Any) -> None:
        """DSPy's field listeners know adapters by class name; those of the streamed step learn which one this
        call speaks as (JSON for a schema-constrained LM, Chat otherwise), so `dspy.streamify` works with it."""
        predict = dspy.settings.caller_predict
        if predict is not None and dspy.settings.send_stream is not None:
            follow_listeners(predict, _PLAIN_JSON if wants_json_schema(lm) else _PLAIN_CHAT)

    def __call__(
        self,
        lm: Any,
        lm_kwargs: dict[str, Any],
        signature: Any,
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
    ) -> list[dict[str, Any]]:
        self._tell_stream_listeners(lm)
        if wants_json_schema(lm):
            return self.json_adapter(lm, lm_kwargs, signature, demos, inputs)
        return super().__call__(lm, lm_kwargs, signature, demos, inputs)

    async def acall(
        self,
        lm: Any,
        lm_kwargs: dict[str, Any],
        signature: Any,
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
    ) -> list[dict[str, Any]]:
        self._tell_stream_listeners(lm)
        if wants_json_schema(lm):
            return await self.json_adapter.acall(lm, lm_kwargs, signature, demos, inputs)
        return await super().acall(lm, lm_kwargs, signature, demos, inputs)

    def __repr__(self) -> str:
        return "AutoAdapter(ChatAdapter; strict JSON schema for constrained LMs)"
