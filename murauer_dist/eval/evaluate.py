"""`murauer-dist evaluate`: run a checkpoint on every test frame and write the standard outputs.

    murauer-dist evaluate CHECKPOINT [SHARDS] [--out DIR] [--batch B] [--domain real|synth]

Test protocol (docs/method.md §6.1): real camera-1 crops around the ground-truth palm centre,
no augmentation, the mapped real path (real -> f -> m -> p; a method that never trained m runs
unmapped, see methods.uses_mapping), predictions de-normalised to camera mm.
`--domain synth` runs the same frames' synthetic twins through the unmapped path (f -> p) into
DIR = RUN/eval-synth: the error that is left without any domain gap, so real minus synth error is
the domain gap a model still has.

DIR gets results_xyz.txt and results_uvd.txt (community layout, one line per evaluated test frame
in frame order), groundtruth_uvd.txt (the same frames' ground truth, so `score` can re-check any
run), frames.txt (the test frame index of every line), metrics.json and PNG plots. The dataset
(data.dataset of the checkpoint's config, checked against the shards) gives the camera of the uvd
files, the joint labels and the overlay bones; metrics.json records its name. The subject split is
the one make-shards recorded in the test manifest (frames/sources.py); metrics.json records it too
(`subject_split`), which is where `score` finds it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from murauer_dist.atomic import atomic_write_text
from murauer_dist.batches.batch import to_device
from murauer_dist.batches.eval_loader import EVAL_SPLITS, build_eval_loader
from murauer_dist.batches.streams import EVAL_STREAMS
from murauer_dist.errors import UserError
from murauer_dist.eval.metrics import compute_metrics
from murauer_dist.eval.result_files import write_result_file
from murauer_dist.eval.score import format_table
from murauer_dist.frames.datasets import DatasetSpec
from murauer_dist.frames.sources import subject_split_of_manifest
from murauer_dist.geometry import denormalize_joints
from murauer_dist.inference.checkpoints import load_pose
from murauer_dist.paths import output_folder, what_is
from murauer_dist.shards.manifest import read_manifest
from murauer_dist.tracking.progress import progress


class EvaluationError(UserError):
    """A checkpoint or option that `evaluate` cannot use."""


OVERLAY_COUNT = 8                  # qualitative examples, spread from the best to the worst frame


def _as_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def _example_slice(batch_size: int) -> slice:
    """Crops kept per batch for the overlays: the first and the middle one (a few MB for NYU)."""
    return slice(None, None, max(1, batch_size // 2))


@torch.inference_mode()
def predict(model: torch.nn.Module, batches, device: torch.device | str | None = None, *,
            mapped: bool) -> dict:
    """Run `model` over evaluation batches (contract: batches/batch.py); everything in frame order.

    Returns pred_xyz, gt_xyz (N, J, 3) camera mm; frames (N,); center_xyz (N, 3); cube_mm (N,);
    examples: {depth (K, H, W), frame, center_xyz, cube_mm}, two crops of every batch, kept for the
    qualitative overlays. mapped: run the inputs through m (real images of a model whose method
    trained m; see methods.uses_mapping).
    """
    if device is None:
        device = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.eval()
    parts: dict[str, list[np.ndarray]] = {key: [] for key in
                                          ("pred_xyz", "gt_xyz", "frames", "center_xyz", "cube_mm", "depth")}
    for batch in progress(batches, desc="evaluate"):
        batch = to_device(batch, device)
        pose = model.pose(model.embed(batch["depth"], mapped=mapped)["emb"])["pose"]
        center, cube = _as_numpy(batch["center_xyz"]).astype(np.float64), _as_numpy(batch["cube_mm"]).astype(np.float64)
        parts["pred_xyz"].append(denormalize_joints(_as_numpy(pose), center, cube))
        parts["gt_xyz"].append(denormalize_joints(_as_numpy(batch["target"]), center, cube))
        parts["frames"].append(batch["frame"].cpu().numpy().astype(np.int64))
        parts["center_xyz"].append(center)
        parts["cube_mm"].append(cube)
        parts["depth"].append(_as_numpy(batch["depth"][_example_slice(len(pose)), 0]))
    model.train(was_training)
    if not parts["frames"]:
        raise EvaluationError("the evaluation loader yielded no batches: the test split holds no frames "
                              "(check the shard set's test/manifest.json)")
    batch_start = np.cumsum([0] + [len(f) for f in parts["frames"][:-1]])
    kept = np.concatenate([start + np.arange(len(f))[_example_slice(len(f))]
                           for start, f in zip(batch_start, parts["frames"])])
    merged = {key: np.concatenate(values) for key, values in parts.items() if key != "depth"}
    examples = {"depth": np.concatenate(parts["depth"]), "frame": merged["frames"][kept],
                "center_xyz": merged["center_xyz"][kept], "cube_mm": merged["cube_mm"][kept]}
    return {**_in_frame_order(merged), "examples": examples}


def _in_frame_order(result: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sort the per-frame arrays by frame index (loaders may interleave) and refuse duplicates."""
    order = np.argsort(result["frames"], kind="stable")
    frames = result["frames"][order]
    duplicated = frames[1:][frames[1:] == frames[:-1]]
    if duplicated.size:
        raise ValueError(f"the evaluation loader yielded test frame {int(duplicated[0])} more than once "
                         f"({duplicated.size} repeats): an eval loader must visit every frame exactly once")
    return {key: value[order] for key, value in result.items()}


def _pick_examples(depth_examples: dict, pred_xyz: np.ndarray, gt_xyz: np.ndarray, frames: np.ndarray,
                   count: int) -> dict[str, np.ndarray]:
    """Up to `count` of the kept crops, spread over their error range (best to worst)."""
    rows = np.searchsorted(frames, depth_examples["frame"])
    if (rows >= len(frames)).any() or (frames[np.minimum(rows, len(frames) - 1)] != depth_examples["frame"]).any():
        raise ValueError("depth_examples name frames that are not among the evaluated frames")
    error = np.linalg.norm(pred_xyz[rows] - gt_xyz[rows], axis=-1).mean(axis=1)
    by_error = np.argsort(error, kind="stable")
    chosen = by_error[np.unique(np.linspace(0, len(by_error) - 1, min(count, len(by_error))).round().astype(int))]
    return {"depth": np.asarray(depth_examples["depth"])[chosen], "pred_xyz": pred_xyz[rows[chosen]],
            "gt_xyz": gt_xyz[rows[chosen]], "center_xyz": np.asarray(depth_examples["center_xyz"])[chosen],
            "cube_mm": np.asarray(depth_examples["cube_mm"])[chosen], "frame": frames[rows[chosen]],
            "error_mm": error[chosen]}


def subject_split_row(frames: np.ndarray, split_frame: int | None) -> int | None:
    """The row where the second test subject starts, given the (sorted) frame index of every row."""
    return None if split_frame is None else int(np.searchsorted(frames, split_frame))


def write_evaluation(out_dir: str | Path, pred_xyz: np.ndarray, gt_xyz: np.ndarray, depth_examples: dict | None = None,
                     frames: np.ndarray | None = None, subject_split: int | None = None, name: str = "model",
                     info: dict | None = None, *, spec: DatasetSpec) -> dict:
    """Write result files, metrics.json and plots; print the table; return the metrics.

    pred_xyz, gt_xyz: (N, J, 3) camera mm in frame order; frames: the test frame of every row
    (default 0..N-1); depth_examples: {depth (K, H, W) normalised crops, frame, center_xyz, cube_mm}
    for the overlay grid; subject_split: frame where the second test subject starts (NYU: 2440);
    spec: the dataset (camera of the uvd files, joint labels, bones).
    """
    from murauer_dist.eval.plots import plot_overlays, plot_per_joint_error, plot_success_curves  # lazy: heavy: matplotlib
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = np.arange(len(pred_xyz)) if frames is None else np.asarray(frames, np.int64)
    if np.any(np.diff(frames) <= 0):
        raise ValueError("frames must be strictly increasing (rows in test frame order)")
    metrics = compute_metrics(pred_xyz, gt_xyz, subject_split_row(frames, subject_split),
                              joint_labels=spec.joints.labels)
    metrics["subject_split"] = subject_split
    write_result_file(out_dir / "results_xyz.txt", pred_xyz, "xyz", spec.camera)
    write_result_file(out_dir / "results_uvd.txt", pred_xyz, "uvd", spec.camera)
    write_result_file(out_dir / "groundtruth_uvd.txt", gt_xyz, "uvd", spec.camera)
    atomic_write_text(out_dir / "frames.txt", "".join(f"{int(f)}\n" for f in frames))
    record = {"name": name, "dataset": spec.name, **(info or {}), **metrics}
    atomic_write_text(out_dir / "metrics.json", json.dumps(record, indent=1) + "\n")
    plot_success_curves({name: metrics}, out_dir / "success_rate.png")
    plot_per_joint_error(metrics, out_dir / "per_joint_error.png")
    if depth_examples is not None and len(depth_examples["depth"]):
        examples = _pick_examples(depth_examples, np.asarray(pred_xyz), np.asarray(gt_xyz), frames, OVERLAY_COUNT)
        plot_overlays(examples, out_dir / "qualitative.png", camera=spec.camera, bones=spec.joints.bones)
    print(format_table({name: metrics}))
    return metrics


def eval_dir(run_dir: str | Path, domain: str = "real", split: str = "test") -> Path:
    """Where `evaluate` writes a run's outputs by default: RUN/eval, or RUN/eval-synth for the twins;
    another split than the test split adds its name (RUN/eval-val, RUN/eval-labeled-synth)."""
    parts = ["eval", *([split] if split != "test" else []), *([domain] if domain != "real" else [])]
    return Path(run_dir) / "-".join(parts)


def subject_split_of(cfg, spec: DatasetSpec) -> int | None:
    """The test frame where the second test subject starts, as the test manifest of cfg.data.shards
    records it (frames/sources.py), or None for a one-subject test set."""
    return subject_split_of_manifest(read_manifest(Path(cfg.data.shards) / "test"), spec)


def _shards_root(test_shards: str) -> str:
    """Accept the shard set folder (SHARDS) or its test split (SHARDS/test)."""
    path = Path(test_shards)
    return str(path.parent) if path.name == "test" and (path / "manifest.json").is_file() else str(path)


def evaluate_command(checkpoint: str, test_shards: str = "", out: str = "", batch: int = 0,
                     domain: str = "real", split: str = "test") -> dict:
    """Evaluate CHECKPOINT (file or run folder) on the test split of TEST_SHARDS (default: its config's).

    domain: "real" (the protocol) or "synth" (the synthetic twins, unmapped path).
    split: "test" (the protocol), "val", or "labeled" (the labeled real frames the run trained on: next
    to the held-out splits' error, how well the model fits its own training frames).
    """
    if domain not in EVAL_STREAMS:
        raise EvaluationError(f"evaluate: --domain must be one of {sorted(EVAL_STREAMS)}, got {domain!r}")
    if split not in EVAL_SPLITS:
        raise EvaluationError(f"evaluate: --split must be one of {', '.join(EVAL_SPLITS)}, got {split!r}")
    if not Path(checkpoint).exists():
        raise EvaluationError(f"evaluate: checkpoint {checkpoint} {what_is(checkpoint)} "
                              f"(a checkpoint file or a run folder; train writes them under train.out)")
    run_dir = Path(checkpoint).resolve() if Path(checkpoint).is_dir() else Path(checkpoint).resolve().parent
    out_dir = output_folder(Path(out) if out else eval_dir(run_dir, domain, split), "evaluate --out",
                            "" if out else "the default: in the run folder")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pose = load_pose(checkpoint, device)
    model, cfg, trained_mapped = pose.model, pose.config, pose.mapped
    if test_shards:
        cfg.data.shards = _shards_root(test_shards)
    if batch:
        cfg.loader.eval_batch = int(batch)
    loader = build_eval_loader(cfg, split, rank=0, world_size=1, device=device, domain=domain)
    mapped = trained_mapped and domain == "real"          # synthetic inputs never pass m
    prediction = predict(model, loader, device, mapped=mapped)
    spec = loader.spec                       # data.dataset, checked against the shards' manifest
    subjects = subject_split_of(cfg, spec) if split == "test" else None    # test frame numbers only
    info = {"checkpoint": str(checkpoint), "shards": cfg.data.shards, "method": cfg.train.method,
            "domain": domain, "mapped": mapped, "split": split}
    if split == "labeled":
        info["n_labeled"] = cfg.data.n_labeled
    metrics = write_evaluation(out_dir, prediction["pred_xyz"], prediction["gt_xyz"], prediction["examples"],
                               frames=prediction["frames"], subject_split=subjects, name=Path(checkpoint).stem,
                               info=info, spec=spec)
    print(f"wrote results_xyz.txt, results_uvd.txt, metrics.json and plots to {out_dir}")
    return metrics
