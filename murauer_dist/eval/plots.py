"""Evaluation figures (PNG, matplotlib without a display): success curves, per-joint errors, overlays.

Figures are built on a bare `Figure` (no pyplot state), rendered to bytes and written atomically.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from murauer_dist.atomic import save_figure
from murauer_dist.frames.datasets import Camera
from murauer_dist.geometry import CropWindow, xyz_to_uvd

# The overlays draw the dataset's bones (JointSpec.bones; NYU: finger tip -> middle -> palm).
DPI = 100


def save_png(figure: Figure, path: str | Path) -> Path:
    return save_figure(figure, path, dpi=DPI)


def plot_success_curves(results: dict[str, dict], path: str | Path, max_key: str = "md80") -> Path:
    """Fraction of frames whose worst joint is within t mm, one line per method (metrics dicts)."""
    figure = Figure(figsize=(6.4, 4.8))
    axes = figure.add_subplot()
    for name, metrics in results.items():
        curve = metrics["frame_success_curve"]
        label = f"{name} (ME {metrics['mean_error_mm']:.2f} mm, {max_key.upper()} {metrics.get(max_key, float('nan')):.3f})"
        axes.plot(curve["thresholds_mm"], np.asarray(curve["fraction"]) * 100.0, label=label, linewidth=1.6)
    axes.set_xlabel("maximum allowed distance to ground truth (mm)")
    axes.set_ylabel("fraction of frames with all joints within distance (%)")
    axes.set_ylim(0, 100)
    axes.set_xlim(left=0)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    return save_png(figure, path)


def plot_per_joint_error(metrics: dict, path: str | Path) -> Path:
    """Bar chart of the mean error of every joint, with the overall mean as a line."""
    per_joint = metrics["per_joint_mean_mm"]
    labels, values = list(per_joint), np.asarray(list(per_joint.values()))
    figure = Figure(figsize=(7.0, 4.0))
    axes = figure.add_subplot()
    axes.bar(np.arange(len(values)), values, color="#4c78a8")
    axes.axhline(metrics["mean_error_mm"], color="#e45756", linestyle="--",
                 label=f"mean {metrics['mean_error_mm']:.2f} mm")
    axes.set_xticks(np.arange(len(values)), labels)
    axes.set_ylabel("mean error (mm)")
    axes.set_xlabel("joint")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(loc="upper right")
    return save_png(figure, path)


def joints_to_crop_pixels(joints_xyz: np.ndarray, center_xyz: np.ndarray, cube_mm: float, crop_size: int,
                          camera: Camera) -> np.ndarray:
    """(J, 3) camera mm -> (J, 2) crop pixel coordinates (x right, y down; pixel centres at integers)."""
    window = CropWindow.around(xyz_to_uvd(np.asarray(center_xyz, np.float64), camera), float(cube_mm), crop_size,
                               camera=camera)
    return window.image_to_crop(xyz_to_uvd(joints_xyz, camera)[:, :2]) - 0.5


def _draw_hand(axes, points: np.ndarray, colour: str, label: str, bones) -> None:
    for start, end in bones:
        if max(start, end) < len(points):
            axes.plot(points[[start, end], 0], points[[start, end], 1], color=colour, linewidth=1.2)
    axes.scatter(points[:, 0], points[:, 1], s=10, color=colour, label=label, zorder=3)


def plot_overlays(examples: dict[str, np.ndarray], path: str | Path, columns: int = 4, *, camera: Camera,
                  bones) -> Path:
    """A grid of depth crops with predicted (red) and true (green) joints.

    `examples`: depth (K, H, W) normalised crops; pred_xyz, gt_xyz (K, J, 3) camera mm;
    center_xyz (K, 3); cube_mm (K,); frame (K,) test frame index; optional error_mm (K,).
    `camera`, `bones`: the dataset's (datasets.DatasetSpec.camera, .joints.bones).
    """
    depth = np.asarray(examples["depth"])
    count, size = depth.shape[0], depth.shape[-1]
    rows = max(1, int(np.ceil(count / columns)))
    figure = Figure(figsize=(2.6 * min(count, columns), 2.8 * rows))
    for k in range(count):
        axes = figure.add_subplot(rows, min(count, columns), k + 1)
        axes.imshow(depth[k], cmap="gray", vmin=-1.0, vmax=1.0)
        center, cube = examples["center_xyz"][k], examples["cube_mm"][k]
        for key, colour, label in (("gt_xyz", "#2ca02c", "true"), ("pred_xyz", "#d62728", "predicted")):
            _draw_hand(axes, joints_to_crop_pixels(examples[key][k], center, cube, size, camera), colour, label, bones)
        title = f"frame {int(examples['frame'][k])}"
        if "error_mm" in examples:
            title += f": {float(examples['error_mm'][k]):.1f} mm"
        axes.set_title(title, fontsize="small")
        axes.set_xlim(-0.5, size - 0.5)
        axes.set_ylim(size - 0.5, -0.5)
        axes.set_axis_off()
        if k == 0:
            axes.legend(loc="lower left", fontsize="x-small")
    return save_png(figure, path)
