"""The definitions layer: what the cells define, and the kernel-side registry that keeps it.

One concept per module (open the one named after what you look for):

- `specs.py`       what a cell defines (`FieldSpec`, `SignatureSpec`, `ConstraintSpec`, `PipelineSpec`),
                   the entries and compile records built from them, `RegistryError`, `closest`;
- `signatures.py`  a `%%signature` body -> a `dspy.Signature` class (types, reserved names);
- `expressions.py` a `%%assert` condition / message -> a checked callable -> an engine `Constraint`;
- `store.py`       the transactional `Registry` (incl. judge calibrations) and `get_registry()`;
- `planner.py`     what a change makes stale, and the program a `%%compile` body describes;
- `snapshot.py`    a deterministic JSON picture of the registry state.

Above the engine and `pipeline`, below the magics and the report; no IPython here.
`lmassert_magic.registry` re-exports the public names for code written against the old module.
"""
