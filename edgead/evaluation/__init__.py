"""Metrics, evaluation runs and reports (numpy/OpenCV only, no torch)."""
