"""Export: ONNX (with validation against torch) and TensorRT engines (with an engine cache).

Submodules are imported on use: ``certsr_rt.export.onnx`` needs ``onnx``/``onnxruntime`` at call time,
``certsr_rt.export.tensorrt`` needs ``tensorrt`` at call time; importing either imports neither library.
"""
