"""Silencing library chatter that means nothing to users while diffusers and transformers load."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence library chatter that means nothing to users: progress bars, the torchvision fallback notice
    (transformers prints it when diffusers first imports CLIPImageProcessor), deprecation warnings."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    old_t, old_d = tlog.get_verbosity(), dlog.get_verbosity()
    tlog.set_verbosity_error()
    dlog.set_verbosity_error()
    tlog.disable_progress_bar()
    dlog.disable_progress_bar()
    root = logging.getLogger("transformers")
    old_level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        tlog.set_verbosity(old_t)
        dlog.set_verbosity(old_d)
        root.setLevel(old_level)
