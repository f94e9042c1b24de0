"""`murauer-dist data-report ROOT [--out DIR]`: a procedural dataset measured against the real NYU data
that ships inside the package (frames/nyu_reference/: NYU's test ground truth and one real test frame).

- pose coverage: for n = 10 / 100 / 1000 poses sampled from ROOT's train labels, the mean over NYU's test
  poses of the error of the nearest sampled pose (14 evaluated joints, palm-centred, not rotated);
- crop statistics (camera 1, palm-centred 300 mm cube, 128 px crop), per domain, next to the real frame's:
  hand pixels, invalid (0) pixels inside the closed hand silhouette, local depth std on the hand, silhouette edge length per
  sqrt(area), the background value (median raw depth outside the cube); the same for camera 3, the side
  view that view prediction reconstructs (procedural_real_view / _synth_view; NYU's frame is camera 1 only);
- real vs synthetic twin per pose: silhouette disagreement and mean |depth difference| on shared pixels;
- label noise, where labels are fitted poses (nyu-fit): how far the test labels lie from the poses the
  real frames show, next to the most NYU's can be (no method beats label noise it cannot see, so it is
  below the lowest published mean error on NYU's test labels).

Writes data-report.json, data-report.md and data-report.png to DIR (default ROOT/report).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from murauer_dist.frames.datasets import NYU          # the report measures against NYU's own files
from murauer_dist import geometry
from murauer_dist.atomic import atomic_write_bytes
from murauer_dist.frames import nyu
from murauer_dist.errors import UserError
from murauer_dist.frames.procedural.shown import label_distance, shown_poses
from murauer_dist.paths import output_folder

# Real NYU files shipped as package data (origins and licence: nyu_reference/SOURCES.md).
NYU_FILES = Path(__file__).resolve().parent / "nyu_reference"
NYU_GT, NYU_FRAME = "nyu_test_groundtruth_label.txt.gz", "test/depth_1_0000001.png"
CUBE, CROP = 300.0, 128
VIEW_CAMERA = 3                   # the view-prediction target (config data.view_camera's default)
SAMPLES = (10, 100, 1000)
# The lowest mean error on NYU's test labels in docs/method.md §6.4 (Rad et al., feature mapping): NYU's
# frame-independent label noise must be below it.
NYU_BEST_PUBLISHED_MM = 7.4


class DataReportError(UserError, ValueError):
    """A dataset or reference files the report cannot use."""


def palm_centred(uvd: np.ndarray) -> np.ndarray:
    """(N, 14, 3) uvd -> xyz mm relative to the palm centre."""
    xyz = geometry.uvd_to_xyz(uvd, NYU.camera)
    return xyz - xyz[:, NYU.joints.center:NYU.joints.center + 1]


def nearest_pose_error(reference: np.ndarray, poses: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Per reference pose (R, J, 3): the smallest mean joint distance to any of `poses` (P, J, 3)."""
    best = np.empty(len(reference))
    for start in range(0, len(reference), chunk):
        block = reference[start:start + chunk]
        distance = np.linalg.norm(block[:, None] - poses[None], axis=-1).mean(axis=-1)
        best[start:start + chunk] = distance.min(axis=1)
    return best


def crop_stats(depth: np.ndarray, center_uvd) -> dict:
    """Statistics of a palm-centred crop of a full depth map (mm)."""
    window = geometry.CropWindow.around(center_uvd, CUBE, CROP, camera=NYU.camera)
    crop = geometry.crop_depth(depth, window).astype(np.float64)
    z = float(center_uvd[2])
    hand = (crop > 0) & (np.abs(crop - z) <= CUBE / 2)
    closed = _close(hand, 2)                                   # the silhouette with its small gaps filled
    invalid = closed & (crop == 0)
    full = hand.copy()                                         # pixels whose 3x3 neighbourhood is all hand
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            full &= np.roll(np.roll(hand, dr, 0), dc, 1)
    local = _local_std(crop)[full]
    edge = hand & ~_erode(hand)
    outside = crop[~hand]
    return {"hand_px": int(hand.sum()), "invalid_in_hand": float(invalid.sum() / max(closed.sum(), 1)),
            "local_std_mm": float(np.median(local)) if local.size else float("nan"),
            "edge_per_sqrt_area": float(edge.sum() / max(np.sqrt(hand.sum()), 1.0)),
            "background_mm": float(np.median(outside)) if outside.size else 0.0}


def _close(mask: np.ndarray, radius: int) -> np.ndarray:
    return ndimage.binary_closing(mask, iterations=radius, border_value=0)


def _erode(mask: np.ndarray) -> np.ndarray:
    return ndimage.binary_erosion(mask)


def _local_std(image: np.ndarray) -> np.ndarray:
    mean = ndimage.uniform_filter(image, 3)
    return np.sqrt(np.maximum(ndimage.uniform_filter(image * image, 3) - mean * mean, 0.0))


def twin_difference(real: np.ndarray, synth: np.ndarray, center_uvd) -> dict:
    window = geometry.CropWindow.around(center_uvd, CUBE, CROP, camera=NYU.camera)
    r, s = (geometry.crop_depth(d, window).astype(np.float64) for d in (real, synth))
    z = float(center_uvd[2])
    mr, ms = ((x > 0) & (np.abs(x - z) <= CUBE / 2) for x in (r, s))
    both = mr & ms
    return {"silhouette_xor": float((mr ^ ms).sum() / max((mr | ms).sum(), 1)),
            "mean_abs_mm": float(np.abs(r[both] - s[both]).mean()) if both.any() else float("nan")}


def data_report(root: str, out: str = "", frames: int = 200, seed: int = 0, reference: str = "") -> dict:
    root_path = Path(root)
    ref = Path(reference) if reference else NYU_FILES
    if not (root_path / "train" / "joint_data.mat").is_file() or not (root_path / "test" / "joint_data.mat").is_file():
        raise DataReportError(f"{root} is not an NYU-layout dataset (train/ and test/ joint_data.mat)")
    if not (ref / NYU_GT).is_file() or not (ref / NYU_FRAME).is_file():
        raise DataReportError(f"the real NYU reference files are missing from {ref} ({NYU_GT}, {NYU_FRAME})")
    output_folder(Path(out) if out else root_path / "report", "data-report --out")
    rng = np.random.default_rng(seed)
    gt_uvd = np.loadtxt(ref / NYU_GT).reshape(-1, 14, 3)
    reference_poses = palm_centred(gt_uvd[::4])                   # every 4th NYU test frame (2063)
    train = nyu.NyuSplit(root_path, "train", NYU)
    poses = palm_centred(train.all_labels(1).eval_uvd)
    coverage = {}
    for n in SAMPLES:
        picked = poses[rng.choice(len(poses), size=min(n, len(poses)), replace=False)]
        error = nearest_pose_error(reference_poses, picked)
        coverage[str(n)] = {"poses": len(picked), "mean_mm": float(error.mean()), "median_mm": float(np.median(error))}
    real_frame = nyu.decode_depth_png(ref / NYU_FRAME, NYU.depth_encoding)
    crops = {"nyu_real": crop_stats(real_frame, gt_uvd[0, NYU.joints.center])}
    test = nyu.NyuSplit(root_path, "test", NYU)
    chosen = np.sort(rng.choice(len(test), size=min(frames, len(test)), replace=False))
    per_domain: dict[str, list] = {"real": [], "synth": [], "real_view": [], "synth_view": []}
    twins = []
    for index in chosen:
        labels, side = test.labels(int(index), 1), test.labels(int(index), VIEW_CAMERA)
        real, synth = test.depth(int(index), 1, "real"), test.depth(int(index), 1, "synth")
        per_domain["real"].append(crop_stats(real, labels.center_uvd))
        per_domain["synth"].append(crop_stats(synth, labels.center_uvd))
        for domain in ("real", "synth"):      # what view prediction's target shows after cropping
            per_domain[f"{domain}_view"].append(crop_stats(test.depth(int(index), VIEW_CAMERA, domain),
                                                           side.center_uvd))
        twins.append(twin_difference(real, synth, labels.center_uvd))
    for domain, rows in per_domain.items():
        crops[f"procedural_{domain}"] = {key: float(np.nanmedian([row[key] for row in rows])) for key in rows[0]}
    twin = {key: {"mean": float(np.nanmean(values)), "p10": float(np.nanpercentile(values, 10)),
                  "p90": float(np.nanpercentile(values, 90)), "std": float(np.nanstd(values))}
            for key in twins[0] for values in [np.array([row[key] for row in twins])]}
    made = json.loads((root_path / "procedural.json").read_text()) if (root_path / "procedural.json").is_file() else {}
    report = {"root": str(root_path), "realism": (made.get("realism") or {}).get("name", "default") if made else None,
              "test_frames_measured": len(chosen), "pose_coverage": coverage, "crops": crops, "real_vs_twin": twin,
              "nyu_comparison": nyu_comparison(crops), "label_noise": label_noise(root_path)}
    out_dir = Path(out) if out else root_path / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "data-report.json", (json.dumps(report, indent=2) + "\n").encode())
    atomic_write_bytes(out_dir / "data-report.md", markdown(report).encode())
    _figure(out_dir / "data-report.png", real_frame, gt_uvd[0], test, chosen[:4], twins)
    print(markdown(report), end="")
    print(f"wrote data-report.json, data-report.md and data-report.png to {out_dir}")
    return report


def label_noise(root: Path) -> dict | None:
    """Mean joint distance (14 evaluated joints) of the test labels from the poses the real frames show;
    None where they are the same (no fitting error) or unknown (real data)."""
    poses = shown_poses(root)
    if poses is None:
        return None
    per_frame = label_distance(poses, list(nyu.NyuSplit(root, "test", NYU).spec.joints.evaluated))
    return {"mean_mm": float(per_frame.mean()), "p90_mm": float(np.percentile(per_frame, 90)),
            "nyu_bound_mm": NYU_BEST_PUBLISHED_MM}


# How far a procedural real crop's statistic may lie from the NYU frame's and still count as close:
# relative, except for shares (absolute), whose NYU value may be 0. One NYU frame is the reference, so a
# "close" is weak evidence and an "off" is a lead, not a verdict.
CLOSE_RELATIVE, CLOSE_SHARE = 0.25, 0.02
STATISTICS = {"hand_px": "hand pixels", "invalid_in_hand": "invalid share in the hand",
              "local_std_mm": "local depth std (mm)", "edge_per_sqrt_area": "edge length / sqrt(area)",
              "background_mm": "background (mm)"}


def nyu_comparison(crops: dict) -> list[dict]:
    """Each crop statistic of the procedural real frames next to the NYU frame's, and whether it is close."""
    rows = []
    for key, name in STATISTICS.items():
        nyu_value, ours = crops["nyu_real"][key], crops["procedural_real"][key]
        if key == "invalid_in_hand":
            close = abs(ours - nyu_value) <= CLOSE_SHARE
        else:
            close = abs(ours - nyu_value) <= CLOSE_RELATIVE * abs(nyu_value)
        rows.append({"statistic": key, "name": name, "nyu": nyu_value, "procedural": ours,
                     "verdict": "close" if close else "off"})
    return rows


def markdown(report: dict) -> str:
    lines = [f"# Data report: {report['root']} (realism profile: {report['realism']})", "",
             "Pose coverage: nearest sampled train pose for NYU's test poses (14 joints, palm-centred)", "",
             "| sampled poses | mean (mm) | median (mm) |", "|---|---|---|"]
    lines += [f"| {row['poses']} | {row['mean_mm']:.1f} | {row['median_mm']:.1f} |"
              for row in report["pose_coverage"].values()]
    lines += ["", f"Crops (camera 1, {CUBE:.0f} mm cube, {CROP} px; procedural: median over "
              f"{report['test_frames_measured']} test frames)", "",
              "| crop | hand px | invalid in hand | local std (mm) | edge / sqrt(area) | background (mm) |",
              "|---|---|---|---|---|---|"]
    for name, row in report["crops"].items():
        lines.append(f"| {name} | {row['hand_px']:.0f} | {row['invalid_in_hand']:.3f} | {row['local_std_mm']:.2f} "
                     f"| {row['edge_per_sqrt_area']:.2f} | {row['background_mm']:.0f} |")
    lines += ["", "Real vs synthetic twin per pose", "", "| measure | mean | p10 | p90 | std over poses |",
              "|---|---|---|---|---|"]
    for name, row in report["real_vs_twin"].items():
        lines.append(f"| {name} | {row['mean']:.3f} | {row['p10']:.3f} | {row['p90']:.3f} | {row['std']:.3f} |")
    lines += ["", "Procedural real crops vs the NYU frame (close: within 25 %, shares within 0.02; one NYU frame, "
                  "so a lead, not a verdict)", "", "| statistic | NYU frame | procedural real | |", "|---|---|---|---|"]
    lines += [f"| {row['name']} | {row['nyu']:.3g} | {row['procedural']:.3g} | {row['verdict']} |"
              for row in report.get("nyu_comparison", [])]
    noise = report.get("label_noise")
    if noise:
        verdict = "within" if noise["mean_mm"] < noise["nyu_bound_mm"] else "ABOVE"
        lines += ["", f"Test labels vs the poses the real frames show (fitting error, 14 joints): mean "
                      f"{noise['mean_mm']:.2f} mm, p90 {noise['p90_mm']:.2f} mm; {verdict} what NYU's can be (below "
                      f"{noise['nyu_bound_mm']:g} mm, the lowest published mean error on its test labels)."]
    return "\n".join(lines) + "\n"


def _figure(path: Path, real_frame: np.ndarray, gt_uvd: np.ndarray, test, indices, twins) -> None:
    import matplotlib  # lazy: heavy: matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: heavy: matplotlib

    def crop_image(depth, center):
        window = geometry.CropWindow.around(center, CUBE, CROP, camera=NYU.camera)
        return geometry.normalize_depth(geometry.crop_depth(depth, window), center[2], CUBE)

    fig, axes = plt.subplots(4, len(indices) + 1, figsize=(2.2 * (len(indices) + 1), 9.2))
    axes[0, 0].imshow(crop_image(real_frame, gt_uvd[NYU.joints.center]), cmap="gray", vmin=-1, vmax=1)
    axes[0, 0].set_title("NYU real", fontsize=8)
    axes[1, 0].hist([row["silhouette_xor"] for row in twins], bins=20)
    axes[1, 0].set_title("real vs twin: silhouette xor", fontsize=8)
    rows = [(1, "real"), (1, "synth"), (VIEW_CAMERA, "real"), (VIEW_CAMERA, "synth")]
    for column, index in enumerate(indices, start=1):
        for row, (camera, domain) in enumerate(rows):
            center = test.labels(int(index), camera).center_uvd
            axes[row, column].imshow(crop_image(test.depth(int(index), camera, domain), center), cmap="gray",
                                     vmin=-1, vmax=1)
            axes[row, column].set_title(f"test {int(index)} cam {camera} {domain}", fontsize=8)
    for ax in axes.flat:
        if ax is not axes[1, 0]:
            ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
