"""The process's one OpenVINO Core, shared by the sessions and the int8 quantization."""

from __future__ import annotations

import threading
from typing import Any

_OPENVINO_CORE = None
_OPENVINO_CORE_LOCK = threading.Lock()


def openvino_core() -> Any:
    """The process's one ov.Core, never released. Each ov.Core loads a CPU plugin of its own, and the plugin puts
    an alternate signal stack of its own on the thread that loads it; freeing the plugin unmaps that stack and puts
    the previous one back only if its own is still current. Two plugins freed in the order they were made, or one
    freed on another thread, leave the thread's signal stack unmapped: the next signal handled there (SIGPIPE,
    SIGINT, SIGTERM) kills the process with SIGSEGV, before any handler (faulthandler too) runs."""
    global _OPENVINO_CORE
    with _OPENVINO_CORE_LOCK:
        if _OPENVINO_CORE is None:
            import openvino as ov

            _OPENVINO_CORE = ov.Core()
        return _OPENVINO_CORE
