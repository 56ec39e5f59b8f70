"""Runtime: runs bundles with numpy, OpenCV and ONNX Runtime or TensorRT. Never imports torch."""

from .detector import Detector
from .result import Result

__all__ = ["Detector", "Result"]
