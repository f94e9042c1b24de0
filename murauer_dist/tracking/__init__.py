"""Run tracking: a local JSON-lines metrics file (always), console progress, and wandb (rank 0)."""
from murauer_dist.tracking.run_logger import RunLogger

__all__ = ["RunLogger"]
