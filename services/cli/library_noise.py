"""Quiets what libraries print during `shelfwise up` and `shelfwise export` that says nothing to
the person running them: deprecation notes meant for the libraries' own callers (torch,
transformers), a note that pgserver's socket folder falls back to /tmp, torch's list of
torchvision operators it will not export, and Hugging Face's progress bars when no one watches
them. Each filter names the library and the kind of message; errors and warnings from our own
code still show."""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Modules whose FutureWarning / UserWarning / DeprecationWarning speak to the developers calling
# them (an API to migrate to), not to someone exporting or serving the models.
LIBRARY_MODULES = r"(torch|transformers|sentence_transformers|onnxscript)(\..*)?$"


def quiet_library_noise() -> None:
    """Installs the filters; call it before the libraries are imported (the Hugging Face setting
    is read when huggingface_hub is first imported)."""
    if not sys.stderr.isatty():
        # "Loading weights" and "Writing model shards" bars: in a log they are a line of
        # carriage returns per model.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for category in (FutureWarning, UserWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=LIBRARY_MODULES)
    # torch's pytree deprecation surfaces from copyreg (its stack level points there), so it
    # is matched by its text.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module="copyreg")
    # XDG_RUNTIME_DIR unset (containers, CI): pgserver's socket folder falls back to /tmp, which works.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"platformdirs(\..*)?$")
    # "torchvision is not installed. Skipping torchvision::nms": no model here uses torchvision.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
