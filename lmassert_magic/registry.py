"""Compatibility module: the registry now lives in `lmassert_magic.definitions` (one concept per file).

`from lmassert_magic.registry import get_registry, SignatureSpec, ...` keeps working; new code
imports from the module that defines the name (see `lmassert_magic/definitions/__init__.py`).
"""

from __future__ import annotations

from .definitions.expressions import HELPERS, build_constraint, condition_fields, free_names, parse_expression
from .definitions.planner import PipelinePlan, activated_copy
from .definitions.signatures import (
    SIGNATURE_ATTRIBUTES,
    TYPING_NAMES,
    build_signature,
    resolve_type,
    validate_signature,
)
from .definitions.specs import (
    CONSTRAINT,
    INPUT,
    OUTPUT,
    PROGRAM,
    SIGNATURE,
    CompileRecord,
    ConstraintEntry,
    ConstraintSpec,
    FieldSpec,
    Outcome,
    PipelineSpec,
    RegistryError,
    ResolvedStep,
    SignatureEntry,
    SignatureSpec,
    StepRef,
    closest,
)
from .definitions.store import Registry, Transaction, get_registry
from .engine.defaults import CHECK_TIMEOUT_SECONDS as DEFAULT_CHECK_TIMEOUT

__all__ = [
    "CONSTRAINT",
    "DEFAULT_CHECK_TIMEOUT",
    "HELPERS",
    "INPUT",
    "OUTPUT",
    "PROGRAM",
    "SIGNATURE",
    "SIGNATURE_ATTRIBUTES",
    "TYPING_NAMES",
    "CompileRecord",
    "ConstraintEntry",
    "ConstraintSpec",
    "FieldSpec",
    "Outcome",
    "PipelinePlan",
    "PipelineSpec",
    "Registry",
    "RegistryError",
    "ResolvedStep",
    "SignatureEntry",
    "SignatureSpec",
    "StepRef",
    "Transaction",
    "activated_copy",
    "build_constraint",
    "build_signature",
    "closest",
    "condition_fields",
    "free_names",
    "get_registry",
    "parse_expression",
    "resolve_type",
    "validate_signature",
]
