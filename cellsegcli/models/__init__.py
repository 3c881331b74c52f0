"""Model registry and model folders (``config.json`` + ``model.safetensors``)."""

from .folder import Model, ModelConfig, find_model, load_model, save_model, shipped_models
from .registry import ARCHITECTURES, build

__all__ = ["ARCHITECTURES", "Model", "ModelConfig", "build", "find_model", "load_model", "save_model",
           "shipped_models"]
