"""Shared fixtures. Real-asset tests read ../shared/assets and skip cleanly where it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ASSETS = (Path(__file__).resolve().parents[1] / ".." / "shared" / "assets").resolve()


@pytest.fixture(scope="session")
def assets() -> Path:
    """The shared assets folder; skips the test where it is absent (a user's clone)."""
    if not ASSETS.is_dir():
        pytest.skip("../shared/assets is not present")
    return ASSETS


@pytest.fixture(scope="session", autouse=True)
def _private_model_cache(tmp_path_factory: pytest.TempPathFactory):
    """ONNX exports and engines go to a cache of this test session, never into the user's ~/.cache.

    ``upscale`` runs onnxruntime by default on CPU, so most command tests export their tiny model once
    (per session, thanks to the content-addressed cache). Tests that need a cache of their own set
    ``CERTSR_RT_CACHE`` themselves.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CERTSR_RT_CACHE", str(tmp_path_factory.mktemp("certsr-rt-cache")))
        yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
