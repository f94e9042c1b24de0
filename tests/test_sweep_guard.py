"""A sweep chooses on the validation split: a metric of the test split, or one that is not a validation
metric, is refused when the sweep file is read (before any run starts)."""
from pathlib import Path

import pytest
from conftest import REPO

from murauer_dist.config import ConfigError
from murauer_dist.sweep.spec import is_validation_metric, load_sweep

SWEEP = """
method: grid
metric: {{name: {metric}, goal: minimize}}
parameters:
  loss.lambda_c: {{values: [0.1, 0.2]}}
"""


def _sweep(tmp_path: Path, metric: str) -> Path:
    path = tmp_path / "choose.yaml"
    path.write_text(SWEEP.format(metric=metric))
    return path


@pytest.mark.parametrize("metric", ["main/test_mean_error_mm", "test/mean_error_mm", "main/L_total",
                                    "main/val_test_error", "main/interval_mm", "mean_error_mm"])
def test_a_sweep_refuses_a_metric_that_is_not_a_validation_metric(tmp_path, metric):
    path = _sweep(tmp_path, metric)
    with pytest.raises(ConfigError) as caught:
        load_sweep(path, "tiny")
    message = str(caught.value)
    assert str(path) in message and "metric.name" in message and repr(metric) in message
    assert "validation split" in message and "main/val_mean_error_mm" in message


@pytest.mark.parametrize("metric", ["main/val_mean_error_mm", "pretrain/val_mean_error_mm", "val/mean_error_mm"])
def test_validation_metrics_are_accepted(tmp_path, metric):
    assert is_validation_metric(metric)
    assert load_sweep(_sweep(tmp_path, metric), "tiny").metric == metric


def test_the_shipped_sweep_files_choose_on_validation():
    paths = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))
    assert paths
    for path in paths:
        assert is_validation_metric(load_sweep(path, "demo-cpu").metric), path
