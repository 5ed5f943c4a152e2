"""Which views the notebook frontend can draw: widgets in a Jupyter kernel, else text and static HTML.

Its own module because both the report (`CompileReport`) and the progress bars ask it, and the
progress bars are imported by the report package.
"""

from __future__ import annotations

import os

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def widget_frontend_available() -> bool:
    """True inside a Jupyter kernel with ipywidgets importable (a terminal IPython has no frontend).

    `LMASSERT_WIDGETS=0` forces the static view (e.g. for a headless run whose output is exported).
    """
    if os.environ.get("LMASSERT_WIDGETS", "").strip().lower() in {"0", "false", "no", "off"}:
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None or getattr(shell, "kernel", None) is None:
            return False
        import ipywidgets  # noqa: F401
    except Exception:
        return False
    return True


__all__ = ["WIDGET_MIME", "widget_frontend_available"]
