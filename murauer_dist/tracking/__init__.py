"""Run tracking: a local JSON-lines metrics file (always), console progress, and wandb (rank 0)."""
from murauer_dist.tracking.progress import progress
from murauer_dist.tracking.run_logger import RunLogger, read_metrics
from murauer_dist.tracking.secrets import scrub_secrets

__all__ = ["RunLogger", "progress", "read_metrics", "scrub_secrets"]
