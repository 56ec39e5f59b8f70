"""The core every layer stands on: contracts (errors, configuration, bundle manifest, stage
tensors, registries) and the torch-free math that training, export and runtime share (pre-processing,
schedulers, anomaly maps, kNN, scoring, fusion, metrics).

It imports numpy, OpenCV and PyYAML, and nothing of edgead outside ``edgead.core``
(tests/test_layers.py checks it), so training cannot drift from what the runtime computes.
"""
