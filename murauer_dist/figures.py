"""The README's architecture figure, drawn from the model description (python -m murauer_dist.figures)."""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from murauer_dist.atomic import save_figure  # noqa: E402

BOXES = {  # name: (x, y, w, h, label, colour)
    "x_r": (0.2, 4.3, 1.5, 0.9, "real depth\ncrop $x_r$", "#d9e8f5"),
    "x_s": (0.2, 1.2, 1.5, 0.9, "synthetic\ncrop $x_s$", "#f7e3d0"),
    "f_r": (2.4, 4.3, 1.6, 0.9, "encoder $f$\n(ResNet, 1024-d)", "#e8e8e8"),
    "f_s": (2.4, 1.2, 1.6, 0.9, "encoder $f$\n(shared weights)", "#e8e8e8"),
    "m": (4.7, 4.3, 1.6, 0.9, "mapping $m$\n(2 residual FC)", "#cfe8cf"),
    "p": (7.3, 2.75, 1.6, 0.9, "pose head $p$\n(FC, FC 3J)", "#e8e8e8"),
    "h": (7.3, 0.2, 1.6, 0.9, "discriminator $h$\n(LSGAN)", "#f3d6d6"),
    "g": (9.6, 4.3, 1.7, 0.9, "view decoder $g$\n(DCGAN, +centre)", "#e6dcf2"),
    "y": (9.6, 2.75, 1.7, 0.9, "3D joints\n$\\ell_p$ (labeled)", "#ffffff"),
    "v": (11.9, 4.3, 1.6, 0.9, "other view\n$\\ell_g$ (L1)", "#ffffff"),
}
ARROWS = [  # (from, to, label, where along the arrow the label sits)
    ("x_r", "f_r", "", 0), ("x_s", "f_s", "", 0), ("f_r", "m", "", 0), ("m", "p", "", 0), ("f_s", "p", "", 0),
    ("p", "y", "", 0), ("p", "g", "hidden", 0.3), ("g", "v", "", 0), ("m", "h", "real: 1", 0.75),
    ("f_s", "h", "synth: 0", 0.75)]


def _anchor(box, side):
    x, y, w, h = BOXES[box][:4]
    return {"r": (x + w, y + h / 2), "l": (x, y + h / 2), "b": (x + w / 2, y), "t": (x + w / 2, y + h)}[side]


def architecture_figure(path: str | Path) -> Path:
    fig, ax = plt.subplots(figsize=(12, 4.6))
    ax.set_xlim(0, 13.7)
    ax.set_ylim(-0.2, 5.6)
    ax.axis("off")
    for x, y, w, h, label, colour in BOXES.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour, ec="#444"))
        ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=9)
    for src, dst, label, where in ARROWS:
        sx, sy = _anchor(src, "r")
        dx, dy = _anchor(dst, "l")
        if dst == "h":
            dx, dy = _anchor(dst, "l")
            sx, sy = _anchor(src, "b") if src == "m" else _anchor(src, "r")
        ax.add_patch(FancyArrowPatch((sx, sy), (dx, dy), arrowstyle="-|>", mutation_scale=12, color="#333"))
        if label:
            ax.text(sx + where * (dx - sx) - 0.3, sy + where * (dy - sy) + 0.1, label, fontsize=8, color="#555", ha="center")
    mx, my = _anchor("m", "r")
    ax.annotate("", xy=(_anchor("f_s", "r")[0] + 0.5, 2.1), xytext=(mx - 0.8, 4.3),
                arrowprops=dict(arrowstyle="<->", color="#2a7", ls="--"))
    ax.text(1.2, 3.1, "$\\ell_c$: $m(f(x_r)) \\approx f(x_s)$\n(labeled pairs)", fontsize=8, color="#2a7")
    ax.set_title("MURAUER: map real features onto synthetic ones; one pose head for both", fontsize=11)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return Path(path)


if __name__ == "__main__":
    print(architecture_figure(sys.argv[1] if len(sys.argv) > 1 else "docs/architecture.png"))
