"""`murauer-dist score`: score community result files against ground truth, as one comparison table.

    murauer-dist score PRED.txt [PRED2.txt ...] GROUND_TRUTH.txt [--format uvd|xyz|auto] [--out DIR]
                       [--dataset nyu|...]
    murauer-dist score PRED.txt --ground-truth GT.txt

Without --ground-truth the last file is the ground truth. Every prediction file must have one line
per ground-truth frame; its units are checked against the data and, since a file read in the wrong
units scores hundreds of mm off, against the ground truth as well.

--dataset (default nyu) names the datasets.DatasetSpec whose camera converts uvd <-> xyz and whose
joint count and labels the files have; files that `evaluate` wrote sit next to a metrics.json that
records their dataset, and a different --dataset is refused. The subject split is the one that
metrics.json records beside the ground truth (evaluate took it from the test manifest, where
make-shards put it: frames/sources.py); a ground truth without one (a community file) gets the
dataset spec's split (NYU: frame 2440) when it has exactly the spec's full test length.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from murauer_dist.atomic import atomic_write_text
from murauer_dist.frames.datasets import DEFAULT_DATASET, DatasetSpec, dataset_spec
from murauer_dist.eval.metrics import MAX_THRESHOLD_MM, REPORT_THRESHOLDS_MM, compute_metrics
from murauer_dist.eval.result_files import (FORMATS, ResultFile, ResultFormatError, plausible_formats,
                                            read_result_file)
from murauer_dist.paths import output_folder

# Declared units are rejected when they score this far off while the other units fit the ground truth.
WRONG_UNITS_MIN_ERROR_MM = 50.0
WRONG_UNITS_RATIO = 3.0


def default_subject_split(frames: int, spec: DatasetSpec) -> int | None:
    """The dataset's subject split (NYU's two test subjects split at frame 2440) for a file of its whole
    test split; other files have no such split."""
    return spec.test_subject_split if spec.test_frames is not None and frames == spec.test_frames else None


_NOT_RECORDED = object()


def recorded_subject_split(path: str):
    """The subject_split the metrics.json beside `path` records (an int or None), or _NOT_RECORDED."""
    try:
        record = json.loads((Path(path).parent / "metrics.json").read_text())
    except (OSError, ValueError):
        return _NOT_RECORDED
    if not isinstance(record, dict) or "subject_split" not in record:
        return _NOT_RECORDED
    split = record["subject_split"]
    return split if isinstance(split, int) and not isinstance(split, bool) else None


def subject_split_for(ground_truth: str, frames: int, spec: DatasetSpec) -> int | None:
    """The row where the second subject starts: the ground truth's recorded subject split (evaluate's
    metrics.json; a test frame, turned into a row with the frames.txt beside it), else the spec's default."""
    recorded = recorded_subject_split(ground_truth)
    if recorded is _NOT_RECORDED:
        return default_subject_split(frames, spec)
    rows = Path(ground_truth).parent / "frames.txt"
    if recorded is None or not rows.is_file():
        return recorded
    return int(np.searchsorted(np.loadtxt(rows, dtype=np.int64, ndmin=1), recorded))   # frames are sorted


def check_recorded_dataset(path: str, spec: DatasetSpec) -> None:
    """A result file that `evaluate` wrote has a metrics.json beside it naming its dataset: refuse to
    score it as another dataset (the camera and joints would be the wrong ones)."""
    record = Path(path).parent / "metrics.json"
    try:
        recorded = json.loads(record.read_text()).get("dataset")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(recorded, str) and recorded != spec.name:
        raise ResultFormatError(f"{path}: {record} says these results are of dataset {recorded!r}, but they are "
                                f"scored as dataset {spec.name!r}; pass --dataset {recorded}")


def _mean_error(values_xyz: np.ndarray, gt_xyz: np.ndarray) -> float:
    return float(np.linalg.norm(values_xyz - gt_xyz, axis=-1).mean())


def _check_row_count(pred: ResultFile, gt: ResultFile) -> None:
    found, expected = len(pred.values), len(gt.values)
    if found == expected:
        return
    if found < expected:
        missing = f"line {expected} is" if expected - found == 1 else f"lines {found + 1} to {expected} are"
        detail = (f"the file ends after line {found}, so {missing} missing "
                  f"(a line dropped earlier shifts every later frame)")
    else:
        detail = f"lines {expected + 1} to {found} are extra"
    message = f"{pred.path}: expected {expected} lines (one per frame of {gt.path}), found {found}: {detail}"
    raise ResultFormatError(message)


def load_predictions(path: str, gt: ResultFile, fmt: str = "auto") -> ResultFile:
    """Read a prediction file, check its length and its units against the ground truth (in its camera)."""
    pred = read_result_file(path, fmt, None, num_joints=gt.values.shape[1], camera=gt.camera)
    _check_row_count(pred, gt)
    candidates = plausible_formats(pred.values, gt.camera) if fmt == "auto" else list(FORMATS)
    errors = {f: _mean_error(ResultFile(path, f, pred.values, gt.camera).xyz, gt.xyz) for f in candidates}
    if fmt == "auto":
        return ResultFile(path, min(errors, key=errors.get), pred.values, gt.camera)
    other = next(f for f in FORMATS if f != fmt)
    if errors[fmt] > WRONG_UNITS_MIN_ERROR_MM and errors[other] * WRONG_UNITS_RATIO < errors[fmt]:
        raise ResultFormatError(f"{path}: declared {fmt}, but read as {fmt} the mean error is {errors[fmt]:.1f} mm "
                                f"and read as {other} {errors[other]:.1f} mm: the file holds {other} values "
                                f"(pass --format {other} or auto)")
    return pred


def _method_name(path: str) -> str:
    """The file name without its extension, and without .txt under a .gz (a.txt.gz -> a)."""
    name = Path(path)
    return Path(name.stem).stem if name.suffix == ".gz" else name.stem


def _method_names(paths: list[str]) -> list[str]:
    names = [_method_name(p) for p in paths]
    return [name if names.count(name) == 1 else f"{name}[{i}]" for i, name in enumerate(names)]


def score_files(predictions: list[str], ground_truth: str, fmt: str = "auto",
                subject_split: int | None | str = "auto", dataset: str = DEFAULT_DATASET) -> dict[str, dict]:
    """{method name: metrics dict (+ file, format, dataset)} for every prediction file."""
    spec = dataset_spec(dataset)
    for path in (*predictions, ground_truth):
        check_recorded_dataset(path, spec)
    gt = read_result_file(ground_truth, "auto", None, num_joints=spec.joints.count, camera=spec.camera)
    split = subject_split_for(ground_truth, len(gt.values), spec) if subject_split == "auto" else subject_split
    results = {}
    for name, path in zip(_method_names(predictions), predictions):
        pred = load_predictions(path, gt, fmt)
        results[name] = {"file": path, "format": pred.fmt, "dataset": spec.name,
                         **compute_metrics(pred.xyz, gt.xyz, split, joint_labels=spec.joints.labels)}
    return results


def _cell(value, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def format_table(results: dict[str, dict], max_threshold: int = MAX_THRESHOLD_MM) -> str:
    """One comparison table: ME, median, % of frames within 10..80 mm, MD80, JS80, per-subject ME."""
    within = [t for t in REPORT_THRESHOLDS_MM if t <= max_threshold]
    header = (["method", "frames", "ME mm", "median"] + [f"<={t}mm %" for t in within]
              + [f"MD{max_threshold}", f"JS{max_threshold}", "S1 ME", "S2 ME"])
    rows = [header]
    for name, m in results.items():
        rows.append([name, str(m["frames"]), _cell(m["mean_error_mm"], digits=3), _cell(m["median_error_mm"])]
                    + [_cell(m["frames_within_mm"][str(t)], 100.0, 1) for t in within]
                    + [_cell(m[f"md{max_threshold}"], digits=3), _cell(m[f"js{max_threshold}"], digits=3),
                       _cell(m["subject1_mean_error_mm"]), _cell(m["subject2_mean_error_mm"])])
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def write_scores(out_dir: str | Path, results: dict[str, dict], ground_truth: str) -> dict[str, Path]:
    """scores.json (all metrics of every method) and success_rate.png (the curves overlaid)."""
    from murauer_dist.eval.plots import plot_success_curves  # lazy: heavy: matplotlib
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "scores.json"
    atomic_write_text(json_path, json.dumps({"ground_truth": ground_truth, "methods": results}, indent=1) + "\n")
    return {"json": json_path, "plot": plot_success_curves(results, out_dir / "success_rate.png")}


def _looks_like_ground_truth(path: str) -> bool:
    name = Path(path).name.lower().replace("-", "_")
    return "groundtruth" in name or "ground_truth" in name or name.startswith("gt_") or "_gt." in name


def _check_ground_truth_last(predictions: list[str], ground_truth: str) -> None:
    """The last file is the ground truth: refuse an order that would score the ground truth as a method."""
    named_gt = [p for p in predictions if _looks_like_ground_truth(p)]
    if named_gt and not _looks_like_ground_truth(ground_truth):
        raise ResultFormatError(f"score: {named_gt[0]} looks like the ground truth, but the ground truth is the "
                                f"last file ({ground_truth}); put it last or pass --ground-truth {named_gt[0]}")


def score_command(predictions: list[str], ground_truth: str = "", fmt: str = "auto", out: str = "",
                  dataset: str = DEFAULT_DATASET) -> dict:
    """Score PREDICTIONS against GROUND_TRUTH (or the last positional file) as files of `dataset`; print
    the table."""
    predictions = [str(p) for p in predictions]
    if out:
        output_folder(out, "score --out")
    if not ground_truth:
        if len(predictions) < 2:
            raise ResultFormatError("score: give PREDICTIONS... GROUND_TRUTH (or --ground-truth FILE); "
                                    "e.g. score results_uvd.txt nyu_test_groundtruth_label.txt")
        predictions, ground_truth = predictions[:-1], predictions[-1]
        _check_ground_truth_last(predictions, ground_truth)
    results = score_files(predictions, str(ground_truth), fmt, dataset=dataset)
    print(f"ground truth: {ground_truth}")
    print(format_table(results))
    if out:
        written = write_scores(out, results, str(ground_truth))
        print(f"wrote {written['json']} and {written['plot']}")
    return results
