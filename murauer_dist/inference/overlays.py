"""What `predict` draws: a frame with its predicted joints (overlay PNG) and an animation of them (GIF)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from murauer_dist.atomic import atomic_write_bytes

GIF_WIDTH = 480                      # pixels of an animation frame


def _overlay_figure(depth: np.ndarray, joints_uvd: np.ndarray, detected_uvd: np.ndarray, used_uvd: np.ndarray,
                    bones, title: str, zoom_px: float):
    """The whole frame (left) and the hand's surroundings (right, +-zoom_px around the crop centre)."""
    from matplotlib.figure import Figure  # lazy: heavy: matplotlib
    height, width = depth.shape
    figure = Figure(figsize=(10.0, 4.0))
    shown = np.where(depth > 0, depth, np.nan)
    near = float(used_uvd[2])
    for index, zoom in enumerate((False, True)):
        axes = figure.add_subplot(1, 2, index + 1)
        axes.imshow(shown, cmap="viridis", vmin=near - 250.0, vmax=near + 450.0, interpolation="nearest")
        for start, end in bones:
            axes.plot(joints_uvd[[start, end], 0], joints_uvd[[start, end], 1], color="#d62728",
                      linewidth=1.8 if zoom else 1.0)
        axes.scatter(joints_uvd[:, 0], joints_uvd[:, 1], s=16 if zoom else 4, color="#d62728", zorder=3,
                     label="predicted joints")
        axes.plot(*detected_uvd[:2], marker="x", color="white", markersize=8, linestyle="none", label="centre of mass")
        axes.plot(*used_uvd[:2], marker="+", color="#ff7f0e", markersize=12, linestyle="none", label="crop centre")
        if zoom:
            axes.set_xlim(used_uvd[0] - zoom_px, used_uvd[0] + zoom_px)
            axes.set_ylim(used_uvd[1] + zoom_px, used_uvd[1] - zoom_px)
            axes.legend(loc="lower left", fontsize="x-small", framealpha=0.6)
        else:
            axes.set_xlim(-0.5, width - 0.5)
            axes.set_ylim(height - 0.5, -0.5)
        axes.set_axis_off()
    figure.suptitle(title, fontsize="small")
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.92, wspace=0.03)
    return figure


def render_overlay(depth, joints_uvd, detected_uvd, used_uvd, bones, title: str, zoom_px: float = 120.0) -> bytes:
    """PNG bytes of one frame with its predicted joints (red), centre of mass (x) and crop centre (+)."""
    figure = _overlay_figure(depth, joints_uvd, detected_uvd, used_uvd, bones, title, zoom_px)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def write_gif(pngs: list[bytes], path: Path, fps: float) -> Path:
    from PIL import Image  # lazy: heavy: PIL
    frames = []
    for data in pngs:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            scale = GIF_WIDTH / image.width
            frames.append(image.resize((GIF_WIDTH, max(1, round(image.height * scale)))).quantize(colors=128))
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=int(round(1000 / fps)),
                   loop=0, optimize=False)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def overlay_rows(count: int, overlays: int) -> set[int]:
    """Which frames get an overlay: all (-1), none (0), or `overlays` evenly spaced ones."""
    if overlays < 0 or overlays >= count:
        return set(range(count))
    if overlays == 0:
        return set()
    return set(np.unique(np.linspace(0, count - 1, overlays).round().astype(int)).tolist())
