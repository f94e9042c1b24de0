"""The "real" domain: a structured-light depth sensor looking at the hand in a cluttered room.

What a PrimeSense/Kinect-style camera does to a clean depth map, each with a strength in SensorModel:
- background clutter: a wall, a torso and a table top behind/below the hand (per capture segment);
- edge blur and flying pixels: depth edges mix the near and the far surface;
- the projector shadow: background just beside a foreground edge gets no depth (0);
- dropout along depth edges, random holes and speckle dropout (0);
- depth-dependent noise and quantisation, both in disparity units (so they grow with z^2).
Heavy full-image work stays cheap: the clutter is rendered at 1/4 resolution (smooth surfaces, far
from the hand), edge effects run only in the hand's box, and the noise comes from a bank made once
per process from the seed (per-image offsets drawn from the frame's RNG). Image size and focal
length are the rig's camera's (Rig.camera, a datasets.Camera).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from murauer_dist.frames.procedural import render
from murauer_dist.frames.procedural.rig import Rig
from murauer_dist.frames.datasets import Camera

FAR_MM = 10000.0
MEDIAN_TOLERANCE_PX = 0.25          # correlation window: disparity range (pixels) below which a pixel is kept


@dataclass(frozen=True)
class SensorModel:
    """Strengths of the real-domain effects (0 switches one off)."""

    baseline_mm: float = 75.0              # projector-camera baseline: shadow width and disparity scale
    subpixel: float = 8.0                  # disparity steps of 1/subpixel pixel (the unit of the noise)
    quantise: bool = True                  # round the disparity to whole steps
    # Kinect v1's axial noise at the hands' median depth (800 mm), 1.50 mm (Nguyen et al. 2012: 1.2 mm +
    # 1.9 mm (z/m - 0.4)^2), with the quantisation step's share (docs/data.md, "Sources").
    noise_disparity: float = 0.78          # noise std in disparity steps (z^2-dependent in mm)
    noise_correlation_px: float = 2.5      # blob size of the noise (Gaussian sigma; the sensor correlates windows)
    edge_threshold_mm: float = 18.0        # a 3x3 depth range above this marks a depth edge
    edge_blur: float = 0.6                 # weight of the 3x3 mean on edge pixels (mixed pixels)
    flying_pixels: float = 0.25            # fraction of edge pixels set to a random near/far mix
    # Calibrated on the real NYU frame: the projector shadow (`shadow`, and StructuredLight.occlusion) already
    # takes the pixels a Kinect loses at depth edges; an extra band made crops ragged and holed where NYU's is
    # not (edge length 11.2 vs 7.3, 7 % vs 0 invalid in the hand at 0.55; 7.9 and 1.4 % at 0; docs/data.md).
    edge_dropout: float = 0.0              # fraction of edge-band pixels read as 0
    edge_band_px: int = 1                  # dilation of the edge mask before dropout
    shadow: float = 1.0                    # 1 = full projector shadow, 0 = none
    holes_per_image: float = 2.5           # mean number of random elliptic holes near the hand
    hole_radius_px: tuple = (2.0, 7.0)
    speckle_dropout: float = 0.01          # random single-pixel dropout near the hand
    wall_probability: float = 0.9
    body_probability: float = 0.6
    table_probability: float = 0.35
    max_range_mm: float = 4000.0

    def to_dict(self) -> dict:
        return asdict(self)

    def disparity_scale(self, fx: float) -> float:
        """disparity (in quantisation steps) = disparity_scale(fx) / z, for a camera of focal length fx."""
        return fx * self.baseline_mm * self.subpixel


def sample_scene(rng: np.random.Generator, palm_positions: np.ndarray, reach_mm: float,
                 sensor: SensorModel) -> dict[str, np.ndarray]:
    """Clutter of one capture segment in camera-1 coordinates, clear of the hand's sphere."""
    lowest = palm_positions[:, 1].min() - reach_mm
    nearest = palm_positions[:, 2].max() + reach_mm
    scene = {"planes": [], "torso": None}
    if rng.random() < sensor.wall_probability:
        normal = np.array([rng.normal(0, 0.15), rng.normal(0, 0.1), 1.0])
        normal /= np.linalg.norm(normal)
        scene["planes"].append((normal, float(normal @ [0.0, 0.0, rng.uniform(nearest + 300, 2800)])))
    if rng.random() < sensor.table_probability:                      # horizontal, below the hand
        scene["planes"].append((np.array([0.0, 1.0, 0.0]), float(lowest - rng.uniform(10.0, 120.0))))
    if rng.random() < sensor.body_probability:
        center = np.array([rng.uniform(-300, 300), rng.uniform(-250, 50), nearest + rng.uniform(150, 450)])
        scene["torso"] = (center + [0, 250, 0], center - [0, 450, 0], rng.uniform(130, 180))
    return scene


def render_clutter(scene: dict, rig: Rig, step: int = 4) -> np.ndarray:
    """Clutter depth (3 cams, height, width of rig.camera) float32, rendered at 1/step resolution and
    repeated up."""
    camera = rig.camera
    height, width = camera.height // step, camera.width // step
    depth = np.zeros((3, height, width), dtype=np.float32)
    for cam in (1, 2, 3):
        layers = []
        for normal, offset in scene["planes"]:
            cam_normal = rig.rotations[cam - 1] @ normal
            layers.append(render.render_plane(cam_normal, offset - normal @ rig.centers[cam - 1], height, width, step,
                                              camera=camera))
        if scene["torso"] is not None:
            top, bottom, radius = scene["torso"]
            caps = [rig.to_camera(np.asarray(p)[None, None], cam) for p in (top, bottom)]
            layers.append(render.render_capsules(caps[0], caps[1], np.array([[radius]]), height, width, step,
                                                 camera=camera)[0])
        for layer in layers:
            layer = np.where(layer > 0, layer, FAR_MM)
            depth[cam - 1] = np.where(depth[cam - 1] > 0, np.minimum(depth[cam - 1], layer), layer)
    depth[depth >= FAR_MM] = 0.0
    return depth.repeat(step, axis=1).repeat(step, axis=2)


def noise_bank(seed: int, sensor: SensorModel, size: tuple = (1024, 1280)) -> np.ndarray:
    """Spatially correlated unit-variance noise, the same for every worker of a seed."""
    field = np.random.default_rng([seed, 0x5E75]).standard_normal(size, dtype=np.float32)
    if sensor.noise_correlation_px > 0:
        field = ndimage.gaussian_filter(field, sensor.noise_correlation_px)
        field /= field.std()
    return field


def hand_box(hand_depth: np.ndarray, pad: int = 12):
    """Row and column slices around the rendered hand (None when nothing was rendered)."""
    rows, cols = np.flatnonzero(hand_depth.any(axis=1)), np.flatnonzero(hand_depth.any(axis=0))
    if rows.size == 0:
        return None
    height, width = hand_depth.shape
    return (slice(max(rows[0] - pad, 0), min(rows[-1] + pad + 1, height)),
            slice(max(cols[0] - pad, 0), min(cols[-1] + pad + 1, width)))


def apply_sensor(hand_depth: np.ndarray, clutter: np.ndarray, rng: np.random.Generator, bank: np.ndarray,
                 sensor: SensorModel, camera: Camera, light=None) -> np.ndarray:
    """A clean hand render (the camera's height, width) and its clutter -> what the sensor reads, uint16 mm.

    `light`: a realism.StructuredLight; when enabled, the per-pixel occlusion shadow (over the whole
    rows of the hand's box) and the correlation window replace the hand-mask shadow."""
    box = hand_box(hand_depth)
    depth = clutter.copy()                                       # outside the box there is no hand
    if box is not None:
        hand, back = hand_depth[box], clutter[box]
        nearest = np.where((hand > 0) & ((back == 0) | (hand < back)), hand, back)
        if light is not None and light.enabled:
            scale = camera.fx * sensor.baseline_mm               # disparity in pixels = scale / z
            if light.occlusion:
                rows = depth[box[0]]                             # a view: whole rows, the shadow may leave the box
                rows[:, box[1]] = nearest
                unlit = occlusion_shadow(rows, scale)
                rows[unlit] = 0.0
                nearest = rows[:, box[1]].copy()
            nearest = correlation_window(nearest, light, scale)
            depth[box] = _edge_effects(nearest, hand > 0, rng, sensor, camera.fx, cast_shadow=False)
        else:
            depth[box] = _edge_effects(nearest, hand > 0, rng, sensor, camera.fx)
    return _noise_and_quantise(depth, rng, bank, sensor, camera.fx)


def occlusion_shadow(depth: np.ndarray, scale: float) -> np.ndarray:
    """Pixels of `depth` (rows, width; 0 = no surface) that the projector cannot light.

    The projector is on the camera's right (as in _shadow): a pixel at column u and depth z meets the
    projector's image at p = u - scale / z, and the projector lights it only if every surface to its
    right meets the projector's image further right (p increasing along the row); otherwise a nearer
    surface to its right takes that projector ray."""
    valid = depth > 0
    with np.errstate(divide="ignore"):
        p = np.where(valid, np.arange(depth.shape[1], dtype=np.float32) - np.float32(scale) / depth, np.inf)
    right = np.full_like(p, np.inf)
    right[:, :-1] = np.minimum.accumulate(p[:, ::-1], axis=1)[:, ::-1][:, 1:]
    return valid & (p >= right)


def correlation_window(depth: np.ndarray, light, scale: float) -> np.ndarray:
    """Depth as a sensor that matches over light.window_px reads it: a median of the disparity over the
    window (no surface = disparity 0), then a max over 2 fatten_px + 1 pixels (the nearest pattern wins)."""
    with np.errstate(divide="ignore"):
        disparity = np.where(depth > 0, np.float32(scale) / depth, 0.0).astype(np.float32)
    if light.window_px > 1:
        # The median only where the window's disparity range exceeds MEDIAN_TOLERANCE_PX (depth edges and
        # steep slopes); elsewhere it would move a pixel by less than that (below the noise): kept as is.
        size = light.window_px
        band = (square_filter(disparity, size, np.maximum) - square_filter(disparity, size, np.minimum)
                > MEDIAN_TOLERANCE_PX)
        if band.any():
            padded = np.pad(disparity, size // 2, mode="edge")           # scipy's mode="nearest"
            windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size))[band]
            disparity[band] = np.median(windows.reshape(len(windows), -1), axis=1)
    if light.fatten_px > 0:
        disparity = square_filter(disparity, 2 * light.fatten_px + 1, np.maximum)
    with np.errstate(divide="ignore"):
        return np.where(disparity > 0, np.float32(scale) / disparity, 0.0).astype(np.float32)


def square_filter(image: np.ndarray, size: int, op=np.maximum) -> np.ndarray:
    """scipy.ndimage.maximum_filter(image, size) (op=np.maximum) or minimum_filter (np.minimum) of a
    2D array, bool or float, by shifted in-place comparisons (a few times faster on these boxes).
    scipy's default border mode (reflect) only repeats pixels that are already in a border pixel's
    window, so it equals clipping the window at the border, which is what this does."""
    for axis in (0, 1):
        source, image = image, image.copy()
        for shift in range(1, min(size // 2, image.shape[axis] - 1) + 1):
            later = (slice(shift, None), slice(None)) if axis == 0 else (slice(None), slice(shift, None))
            earlier = (slice(None, -shift), slice(None)) if axis == 0 else (slice(None), slice(None, -shift))
            op(image[later], source[earlier], out=image[later])
            op(image[earlier], source[later], out=image[earlier])
    return image


def _edge_effects(depth: np.ndarray, hand: np.ndarray, rng: np.random.Generator, sensor: SensorModel,
                  fx: float, cast_shadow: bool = True) -> np.ndarray:
    far = np.where(depth > 0, depth, FAR_MM)
    near_max, near_min = square_filter(far, 3, np.maximum), square_filter(far, 3, np.minimum)
    # Only edges the hand takes part in: the clutter's own (blocky, far) edges stay as they are.
    edge = ((near_max - near_min) > sensor.edge_threshold_mm) & square_filter(hand, 5)
    out = depth.copy()
    if sensor.edge_blur > 0:
        mean = ndimage.uniform_filter(np.where(depth > 0, depth, near_max.clip(max=FAR_MM - 1)), 3)
        mixed = (1 - sensor.edge_blur) * depth + sensor.edge_blur * mean
        out = np.where(edge & (depth > 0) & (mixed < FAR_MM * 0.5), mixed, out)
    draws = rng.random((4,) + depth.shape, dtype=np.float32)     # flying, mix, dropout, speckle
    flying = edge & (draws[0] < sensor.flying_pixels) & (near_max < FAR_MM)
    out = np.where(flying, near_min + (near_max - near_min) * draws[1], out)
    if cast_shadow:
        out[_shadow(hand, depth, sensor, fx)] = 0.0
    band = square_filter(edge, 2 * sensor.edge_band_px + 1) if sensor.edge_band_px > 0 else edge
    out[band & (draws[2] < sensor.edge_dropout)] = 0.0
    out[_holes(depth.shape, rng, sensor)] = 0.0
    out[hand & (draws[3] < sensor.speckle_dropout)] = 0.0
    return out


def _shadow(hand: np.ndarray, depth: np.ndarray, sensor: SensorModel, fx: float) -> np.ndarray:
    """Background the projector cannot light: the hand mask shifted by the parallax of hand vs background."""
    behind = depth[~hand & (depth > 0)]
    if sensor.shadow <= 0 or not hand.any() or behind.size == 0:
        return np.zeros_like(hand)
    z_hand, z_back = np.median(depth[hand]), np.median(behind)
    shift = int(round(sensor.shadow * fx * sensor.baseline_mm * max(1 / z_hand - 1 / z_back, 0.0)))
    if shift == 0:
        return np.zeros_like(hand)
    shifted = np.zeros_like(hand)
    shifted[:, :-shift] = hand[:, shift:]                            # projector on the camera's right
    return shifted & ~hand


def _holes(shape: tuple, rng: np.random.Generator, sensor: SensorModel) -> np.ndarray:
    count = rng.poisson(sensor.holes_per_image)
    mask = np.zeros(shape, dtype=bool)
    for _ in range(count):
        r, c = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        ry, rx = rng.uniform(*sensor.hole_radius_px, 2)
        # Only the ellipse's bounding box: the pixels outside it fail the test anyway.
        top, left = max(int(np.floor(r - ry)), 0), max(int(np.floor(c - rx)), 0)
        bottom, right = min(int(np.ceil(r + ry)) + 1, shape[0]), min(int(np.ceil(c + rx)) + 1, shape[1])
        rows, cols = np.ogrid[top:bottom, left:right]
        mask[top:bottom, left:right] |= ((rows - r) / ry) ** 2 + ((cols - c) / rx) ** 2 <= 1.0
    return mask


def _noise_and_quantise(depth: np.ndarray, rng: np.random.Generator, bank: np.ndarray,
                        sensor: SensorModel, fx: float) -> np.ndarray:
    height, width = depth.shape
    top, left = rng.integers(0, bank.shape[0] - height + 1), rng.integers(0, bank.shape[1] - width + 1)
    valid = depth > 0
    with np.errstate(divide="ignore"):
        disparity = np.float32(sensor.disparity_scale(fx)) / depth
    disparity += np.multiply(bank[top:top + height, left:left + width], np.float32(sensor.noise_disparity))
    if sensor.quantise:
        np.rint(disparity, out=disparity)
    with np.errstate(divide="ignore"):
        noisy = np.float32(sensor.disparity_scale(fx)) / disparity
    keep = valid & (disparity > 0) & (noisy < sensor.max_range_mm)
    return np.where(keep, np.rint(noisy, out=noisy), 0).astype(np.uint16)
