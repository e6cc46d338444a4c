"""Runtimes that execute a model: a common runner interface, ONNX Runtime, TensorRT, and backend choice."""
