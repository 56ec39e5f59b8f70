"""Serving: bundles as models of NVIDIA Triton Inference Server, and the client that talks to it.

    protocol.py    the tensors and parameters of a request and a response (one definition)
    model.py       one bundle answering a batch of requests (numpy; what runs inside Triton)
    triton_model.py  the Python-backend adapter Triton loads (model.py of a model repository)
    repository.py  a Triton model repository for a set of bundles (edgead export --triton-repo)
    server.py      starts tritonserver on a repository and waits for it (edgead serve)
    client.py      RemoteDetector: the Detector API over Triton's gRPC or HTTP

Torch-free: it stands on the runtime (the stages run on its backends inside the server).
"""
