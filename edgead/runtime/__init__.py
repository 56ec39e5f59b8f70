"""Runtime: runs bundles with numpy, OpenCV and ONNX Runtime or TensorRT. Never imports torch."""

from .detector import Detector, Result

__all__ = ["Detector", "Result"]
