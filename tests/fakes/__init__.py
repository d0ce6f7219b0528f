"""Test doubles for tier-router's tests (importable as ``tests.fakes``).

Names are re-exported lazily so ``python -m tests.fakes.openai_upstream`` doesn't
import the module twice.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    name: "openai_upstream"
    for name in (
        "DEFAULT_MODELS",
        "DEFAULT_TOOL_ARGUMENTS",
        "Behaviour",
        "ErrorReply",
        "FakeOpenAIUpstream",
        "Hang",
        "RawReply",
        "RecordedRequest",
        "Reply",
        "StreamThenReset",
        "StreamWithoutDone",
        "StreamWithoutUsage",
        "openai_error",
        "serve_forever",
    )
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
