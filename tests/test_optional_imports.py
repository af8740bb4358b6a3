"""Optional dependencies stay optional (STYLE.md point 4): importing the package, the upscaler, the backend
factory, the export modules and the CLI's --help must import none of the GPU / ONNX runtime libraries."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

FORBIDDEN = ("onnxruntime", "tensorrt", "cuda", "cupy")

HELP = """
import sys
from certsr_rt.cli.app import main
sys.argv = ['certsr-rt', '--help']
try:
    main()
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
"""

SNIPPETS = [
    "import certsr_rt",
    HELP,
    "import certsr_rt.runtime.upscaler",
    "import certsr_rt.runtime.backends; import certsr_rt.runtime.backends.onnxruntime_backend",
    "import certsr_rt.runtime.backends.tensorrt_backend",
    "import certsr_rt.runtime.cuda_median",
    "import certsr_rt.export.onnx, certsr_rt.export.tensorrt",
    "import certsr_rt.cli.export",
]


def _imported_by(snippets: list[str]) -> dict[str, list[str]]:
    """For each snippet, run in order in one fresh interpreter: the forbidden modules it added.

    The baseline is ``import torch``: torch's CUDA builds import ``cuda.bindings`` (driver/runtime)
    themselves, and torch is a core dependency. Anything beyond it (``cuda.bindings.nvrtc``,
    onnxruntime, ...) is ours. A module imported by an earlier snippet is charged to that one.
    """
    probe = f"""
import io, json, sys, contextlib
import torch
result = {{}}
for code in {snippets!r}:
    before = set(sys.modules)
    with contextlib.redirect_stdout(io.StringIO()):
        exec(code, {{}})
    result[code] = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {FORBIDDEN!r})
print(json.dumps(result))
"""
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_imports_and_help_pull_in_no_optional_runtime() -> None:
    found = _imported_by(SNIPPETS)
    assert set(found) == set(SNIPPETS)
    offenders = {
        code.strip().splitlines()[-1] if code is not HELP else "certsr-rt --help": mods
        for code, mods in found.items()
        if mods
    }
    assert offenders == {}


def test_the_probe_can_fail() -> None:
    # Guard against a probe that always reports nothing: importing a forbidden module must be seen.
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed")
    snippets = ["import onnxruntime"]
    if importlib.util.find_spec("cuda.bindings") is not None:
        snippets.append("from cuda.bindings import nvrtc")
    found = _imported_by(snippets)
    assert "onnxruntime" in found["import onnxruntime"]
    if len(snippets) == 2:
        assert "cuda.bindings.nvrtc" in found["from cuda.bindings import nvrtc"]
