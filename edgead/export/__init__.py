"""PyTorch -> ONNX stages, calibration, parity checks and TensorRT engines."""
