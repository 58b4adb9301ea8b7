"""The model zoo: CIFAR architectures with pretrained weights, small CNNs, RobustBench models."""

from deeppatch.models.registry import MODELS, ModelEntry, create_model, get_entry, model_names

__all__ = ["MODELS", "ModelEntry", "create_model", "get_entry", "model_names"]
