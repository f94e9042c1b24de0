"""Standard NYU hand-pose metrics on (N, J, 3) joint positions in camera mm (numpy, vectorised).

Definitions (docs/method.md §6.1):
- mean joint error (ME): mean over frames of the mean over joints of ||pred - gt||_2;
- median: median of all per-joint errors;
- frame success rate at t: fraction of frames whose *worst* joint is within t mm;
- MD-score(d) ("MD80" for d = 80): (1/d) * sum_{j=0}^{d-1} success(j), the area under that curve;
- joint success AUC ("JS80"): the same area with every (frame, joint) error counted on its own;
- per-subject ME: NYU's test set shows two people, frames [0, split) and [split, N) (the split is the
  dataset's, datasets.DatasetSpec.test_subject_split).
"""
from __future__ import annotations

import numpy as np

MAX_THRESHOLD_MM = 80             # success curves run over 0..80 mm, the AUC over 0..79
REPORT_THRESHOLDS_MM = (10, 20, 30, 40, 50, 80)


def joint_errors(pred_xyz: np.ndarray, gt_xyz: np.ndarray) -> np.ndarray:
    """(N, J) Euclidean error of every joint in mm."""
    pred_xyz, gt_xyz = np.asarray(pred_xyz, np.float64), np.asarray(gt_xyz, np.float64)
    if pred_xyz.shape != gt_xyz.shape or pred_xyz.ndim != 3 or pred_xyz.shape[-1] != 3:
        raise ValueError(f"predictions {pred_xyz.shape} and ground truth {gt_xyz.shape} must both be (N, J, 3)")
    return np.linalg.norm(pred_xyz - gt_xyz, axis=-1)


def success_fraction(errors: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of `errors` (any shape) that are <= each threshold, via one sort and a search."""
    flat = np.sort(np.ravel(errors))
    return np.searchsorted(flat, np.asarray(thresholds, np.float64), side="right") / max(flat.size, 1)


def success_auc(errors: np.ndarray, max_threshold: int = MAX_THRESHOLD_MM) -> float:
    """(1/d) * sum_{j=0}^{d-1} fraction(errors <= j): the MD-score over integer thresholds."""
    return float(success_fraction(errors, np.arange(max_threshold)).mean())


def subject_errors(frame_mean: np.ndarray, subject_split: int | None) -> dict:
    """Mean error of frames [0, split) and [split, N); None where a subject has no frames."""
    if subject_split is None or subject_split <= 0:
        return {"subject1_mean_error_mm": None, "subject2_mean_error_mm": None, "subject_split": None}
    first, second = frame_mean[:subject_split], frame_mean[subject_split:]
    return {"subject1_mean_error_mm": float(first.mean()) if first.size else None,
            "subject2_mean_error_mm": float(second.mean()) if second.size else None,
            "subject_split": int(subject_split)}


def subjects_text(metrics: dict) -> str:
    """Both test subjects' mean errors in words ("" unless the metrics hold two subjects)."""
    split = metrics.get("subject_split")
    first, second = metrics.get("subject1_mean_error_mm"), metrics.get("subject2_mean_error_mm")
    if split is None or first is None or second is None:
        return ""
    return (f"training actor (test frames 0-{split - 1}): {first:.2f} mm; second actor from frame {split}: "
            f"{second:.2f} mm")


def compute_metrics(pred_xyz: np.ndarray, gt_xyz: np.ndarray, subject_split: int | None,
                    max_threshold: int = MAX_THRESHOLD_MM, *, joint_labels) -> dict:
    """All metrics as a JSON-serialisable dict of named values (mm; fractions in [0, 1]); subject_split:
    the row where the second test subject starts (None: one subject); joint_labels: the dataset's."""
    errors = joint_errors(pred_xyz, gt_xyz)
    if errors.shape[0] == 0:
        raise ValueError("no frames to score")
    labels = list(joint_labels) if len(joint_labels) == errors.shape[1] else [f"J{j}" for j in range(errors.shape[1])]
    frame_mean, frame_max = errors.mean(axis=1), errors.max(axis=1)
    thresholds = np.arange(max_threshold + 1)
    curve = success_fraction(frame_max, thresholds)
    return {
        "frames": int(errors.shape[0]),
        "joints": int(errors.shape[1]),
        "mean_error_mm": float(frame_mean.mean()),
        "median_error_mm": float(np.median(errors)),
        "max_error_mm": float(errors.max()),
        "mean_frame_std_mm": float(errors.std(axis=1).mean()),
        "per_joint_mean_mm": {label: float(v) for label, v in zip(labels, errors.mean(axis=0))},
        "per_joint_max_mm": {label: float(v) for label, v in zip(labels, errors.max(axis=0))},
        "frames_within_mm": {str(t): float(curve[t]) for t in REPORT_THRESHOLDS_MM if t <= max_threshold},
        "frame_success_curve": {"thresholds_mm": thresholds.tolist(), "fraction": curve.tolist()},
        f"md{max_threshold}": float(curve[:max_threshold].mean()),
        f"js{max_threshold}": success_auc(errors, max_threshold),
        **subject_errors(frame_mean, subject_split),
    }
