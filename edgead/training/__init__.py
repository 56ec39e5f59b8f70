"""PyTorch training (needs ``pip install "edgead[train]"``); never imported by the runtime."""
