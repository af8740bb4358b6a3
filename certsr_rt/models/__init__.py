"""Super-resolution architectures (one file each in ``arch/``), the registry of named models, and loading.

``load_model("realesrgan-x4plus")`` (the default, bundled) or ``load_model("path/to/ckpt.pth")`` returns an
:class:`SRModel`; :func:`list_specs` lists what is registered.
"""

from certsr_rt.models.arch import RRDBNet, SRVGGNetCompact
from certsr_rt.models.descriptor import SRModel
from certsr_rt.models.loader import load_model
from certsr_rt.models.registry import DEFAULT_MODEL, ModelSpec, get_spec, list_specs

__all__ = [
    "DEFAULT_MODEL",
    "ModelSpec",
    "RRDBNet",
    "SRModel",
    "SRVGGNetCompact",
    "get_spec",
    "list_specs",
    "load_model",
]
