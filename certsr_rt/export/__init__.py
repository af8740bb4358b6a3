"""Export: ONNX (with validation against torch) and TensorRT engines (with an engine cache).

Submodules are imported on use: ``certsr_rt.export.onnx`` needs ``onnx``/``onnxruntime`` at call time,
``certsr_rt.export.tensorrt`` needs ``tensorrt`` at call time; importing either imports neither library.
:mod:`certsr_rt.export.exported` describes an exported file (``.onnx`` or ``.engine``) without loading it.
"""

from certsr_rt.export.exported import EXPORTED_SUFFIXES, ExportedModel, describe_exported, is_exported_path

__all__ = ["EXPORTED_SUFFIXES", "ExportedModel", "describe_exported", "is_exported_path"]
