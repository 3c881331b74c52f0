"""Model registry and model folders (``config.json`` + ``model.safetensors``)."""

from .folder import (Model, ModelConfig, find_model, load_model, read_config, save_model, shipped_models,
                     write_config)
from .ensemble import load_models
from .registry import ARCHITECTURES, build

__all__ = ["ARCHITECTURES", "Model", "ModelConfig", "build", "find_model", "load_model", "load_models", "read_config",
           "save_model", "shipped_models", "write_config"]
