"""Runtime: runs bundles with numpy, OpenCV and ONNX Runtime or TensorRT. Never imports torch."""

from .detector import Detector
from .interface import AnomalyDetector
from .result import Result

__all__ = ["AnomalyDetector", "Detector", "Result"]
