"""DiffusionAD training: networks, losses, the joint trainer and model loading."""

from .trainer import DiffusionADModel, DiffusionADTrainer, load_model, train

__all__ = ["DiffusionADModel", "DiffusionADTrainer", "load_model", "train"]
