"""The MURAUER networks (no parallelism here): build_model(cfg), build_discriminator(cfg)."""
from murauer_dist.models.discriminator import Discriminator, build_discriminator
from murauer_dist.models.murauer import MurauerModel, build_model, compile_networks, count_parameters

__all__ = ["Discriminator", "MurauerModel", "build_discriminator", "build_model", "compile_networks",
           "count_parameters"]
