"""`murauer-dist`: the command line. It only dispatches; every command lives in its own module.

Overrides are positional `section.key=value` strings (typed by the config, not by fire).
"""
from __future__ import annotations

import os
import sys

import fire

from murauer_dist.errors import UserError, machine_error


def print_config(preset: str = "", *overrides: str) -> None:
    """Print the resolved config of PRESET (a name in configs/ or a YAML path) with overrides."""
    from murauer_dist.config import dumps, load_config  # lazy: fast cli
    print(dumps(load_config(preset or None, overrides)), end="")


def synth_data(out: str, frames_train: int = 4000, frames_test: int = 800, seed: int = 0,
               workers: int = 2, overwrite: bool = False, dataset: str = "nyu", realism: str = "default") -> None:
    """Write the procedural NYU-layout dataset (real and synthetic domains, 3 cameras) to OUT.

    --dataset names the sensor and joints (murauer_dist/frames/datasets.py): nyu (default) or qvga.
    --realism names a profile of murauer_dist/frames/procedural/realism.py: default, or nyu-fit (labels and
    synthetic twins at a fitted pose, the actor's forearm in the real frames)."""
    from murauer_dist.frames.procedural.generate import synth_data as run  # lazy: fast cli
    run(out, frames_train=frames_train, frames_test=frames_test, seed=seed, workers=workers, overwrite=overwrite,
        dataset=dataset, realism=realism)


def data_report(root: str, out: str = "", frames: int = 200, seed: int = 0, reference: str = "") -> None:
    """Measure the procedural dataset ROOT against the real NYU files shipped with the package (frames/nyu_reference/):
    pose coverage of NYU's test poses, crop statistics next to a real frame, real vs synthetic twin per
    pose (--frames test frames; --reference: another folder of those files); data-report.json, .md and .png
    into --out (default ROOT/report)."""
    from murauer_dist.frames.report import data_report as run  # lazy: fast cli
    run(root, out=out, frames=frames, seed=seed, reference=reference)


def make_shards(root: str = "", out: str = "", *overrides: str, split: str = "all", shard_size: int = 0,
                workers: int = 2, preset: str = "", verify: str = "", overwrite: bool = False) -> None:
    """Crop an NYU-layout ROOT into WebDataset shards under OUT; `--verify OUT` re-checks a shard set.

    Options are flags (`--split train --workers 8`) so that positional `section.key=value` overrides
    after ROOT OUT are not taken for them. `--overwrite` rewrites shards that OUT holds from another
    source (other root, changed images or labels) instead of stopping."""
    from murauer_dist.shards.cli import make_shards_command  # lazy: fast cli
    make_shards_command(root=root, out=out, split=split, shard_size=shard_size, workers=workers,
                        preset=preset, verify=verify, overrides=overrides, overwrite=overwrite)


def train(preset: str, *overrides: str) -> None:
    """Train PRESET: stage 1 (synthetic pre-training) then stage 2 (MURAUER or a baseline)."""
    from murauer_dist.train.entry import train_command  # lazy: fast cli
    train_command(preset, overrides)


def evaluate(checkpoint: str, test_shards: str = "", out: str = "", batch: int = 0, domain: str = "real",
             centre: str = "gt", refiner: str = "", root: str = "", split: str = "test") -> None:
    """Evaluate CHECKPOINT on the test shards: result files, metrics.json, table, plots.

    --domain synth scores the synthetic twins of the test frames instead (the error without domain gap).
    --split val scores the validation split, --split labeled the labeled real frames the run trained on
    (RUN/eval-val, RUN/eval-labeled): a training-frame error close to the held-out one means the model
    underfits, a much lower one that it overfits.
    --centre gt|detected|refined|all crops around the ground-truth palm centre (the protocol), the
    closest object's centre of mass in the raw test frame, that centre refined by --refiner CKPT, or
    all three side by side (RUN/eval-centres.md); the raw frames come from the shards' source dataset
    (--root overrides).
    """
    if centre == "gt" and not refiner:
        from murauer_dist.eval.evaluate import evaluate_command  # lazy: fast cli
        evaluate_command(checkpoint, test_shards=test_shards, out=out, batch=batch, domain=domain, split=split)
        return
    from murauer_dist.inference.centres import CentreEvaluationError, evaluate_centres_command  # lazy: fast cli
    if split != "test":
        raise CentreEvaluationError(f"evaluate: --centre {centre} scores the test split; --split {split} goes with "
                                    f"--centre gt only")
    if domain != "real":
        raise CentreEvaluationError(f"evaluate: --centre {centre} scores real frames; --domain {domain} goes with "
                                    f"--centre gt only")
    evaluate_centres_command(checkpoint, test_shards=test_shards, out=out, batch=batch, centre=centre,
                             refiner=refiner, root=root)


def train_refiner(preset: str, *overrides: str) -> None:
    """Train the centre refiner of PRESET on its shards (refiner.* keys) into refiner.out (default
    TRAIN_OUT/refiner.pt): a small CNN that moves a crop centre onto the palm centre."""
    from murauer_dist.localize.train_refiner import train_refiner_command  # lazy: fast cli
    train_refiner_command(preset, overrides)


def predict(checkpoint: str, input: str, *overrides: str, out: str = "", refiner: str = "", format: str = "auto",
            split: str = "test", cube_mm: float = 0.0, overlays: int = 100, fps: float = 10.0,
            skip_empty: bool = False) -> None:
    """3D hand poses of raw depth frames (no ground truth) into --out DIR: result files, overlays, GIF.

    INPUT: an NYU-layout folder (--split test|train), a folder of depth PNGs or a .npy stack (N, H, W) in
    mm (--format auto|nyu-rgb|gray16|npy; auto: from the file). The hand is found by the closest object's
    centre of mass, then refined by --refiner CKPT; localize.KEY=VALUE overrides; --cube-mm (default
    data.cube_mm); --overlays N (-1 all, 0 none); --skip-empty skips frames without a hand instead of stopping.
    Frames that cannot be read are skipped, listed in DIR/skipped.txt and counted on stderr."""
    from murauer_dist.inference.predict import predict_command  # lazy: fast cli
    predict_command(str(checkpoint), str(input), str(out), *overrides, refiner=str(refiner), fmt=str(format),
                    split=str(split), cube_mm=cube_mm, overlays=overlays, fps=fps, skip_empty=skip_empty)


def score(*predictions: str, ground_truth: str = "", format: str = "auto", out: str = "",
          dataset: str = "nyu") -> None:
    """Score result files (uvd or xyz, 8252x42 community layout) against GROUND_TRUTH.

    --dataset (default nyu) gives the camera that converts uvd <-> xyz and the joint count."""
    from murauer_dist.eval.score import score_command  # lazy: fast cli
    score_command(list(predictions), ground_truth=ground_truth, fmt=format, out=out, dataset=dataset)


def bench(what: str, *args: str, **kwargs) -> None:
    """Benchmarks: `bench synth-data`, `bench shards`, `bench loader`, `bench train`, `bench dist`,
    `bench gpu-check OUT_DIR [--device cuda|cpu]` (a new GPU node in one run),
    `bench step-cost [--preset nyu]` (FLOPs, kernels and host syncs of one step, counted on `meta`),
    `bench infer [--preset demo-cpu] [--batches 1,64]` (CPU inference: torch, TorchScript, ONNX Runtime)."""
    from murauer_dist.bench import bench_command  # lazy: fast cli
    bench_command(what, *args, **kwargs)


def sweep(sweep_file: str, *overrides: str, max_runs: int = 0, preset: str = "demo-cpu", out: str = "",
          seed: int = 0) -> None:
    """Run a wandb sweep file locally (no server): grid/random/bayes, each run logged offline."""
    from murauer_dist.sweep import sweep_command  # lazy: fast cli
    sweep_command(sweep_file, overrides=overrides, max_runs=max_runs, preset=preset, out=out, seed=seed)


def demo(*overrides: str, out: str = "runs/demo", preset: str = "demo-cpu") -> None:
    """The main job on the embedded dataset: data, shards, pre-training, MURAUER, evaluation."""
    from murauer_dist.recipes.demo import demo_command  # lazy: fast cli
    demo_command(out=out, preset=preset, overrides=overrides)


def experiment(name: str = "label-efficiency", *overrides: str, preset: str = "label-efficiency",
               out: str = "runs/label-efficiency", methods: str = "synth_only,real_synth,dm_only,view_only,murauer",
               ns: str = "10,100", seeds: str = "1,2,3", ablation_ns: str = "10", select: str = "",
               select_on: str = "val", label_seeds: str = "") -> None:
    """Label-efficiency experiment: METHODS x NS x SEEDS stage-2 runs from one shared stage 1.

    --methods, --ns, --seeds: comma-separated lists; --ablation-ns: the n values of dm_only and
    view_only ("all": every n); --label-seeds: one label seed (data.label_seed: which n real frames carry
    labels) per training seed, paired by position (default: each training seed is its own label seed;
    "fixed": data.label_seed for every cell); --select "lambda_g=1e-4,1e-3;lambda_m=1e-5,1e-4": loss
    weights tried per method and n, chosen by the mean validation error over the seeds (--select-on
    val, the only split allowed for a choice).
    """
    from murauer_dist.recipes.experiment import experiment_command  # lazy: fast cli
    experiment_command(name, preset=preset, out=out, overrides=overrides, methods=methods, ns=ns, seeds=seeds,
                       ablation_ns=ablation_ns, select=select, select_on=select_on, label_seeds=label_seeds)


def export(checkpoint: str, format: str = "onnx", out: str = "", batch: str = "dynamic", check: bool = True) -> None:
    """Export CHECKPOINT's inference path (real crop -> f -> m -> p, or f -> p) as ONNX or TorchScript;
    a centre refiner checkpoint (`train-refiner`'s file) exports its network (crop -> centre offset).

    --format onnx|torchscript; --out FILE (default: beside the checkpoint); --batch dynamic or a fixed
    size. The file is run once against torch (--nocheck skips it); OUT.json holds the conventions."""
    from murauer_dist.inference.export import export_command  # lazy: fast cli
    export_command(checkpoint, fmt=format, out=out, batch=batch, check=check)


def import_original(source: str, out: str, *overrides: str, preset: str = "nyu", method: str = "murauer") -> None:
    """Convert a model file of the original MURAUER code (FILE.mdl, a state dict) into a checkpoint OUT.pt
    that `evaluate` scores; --preset (default nyu) and key=value overrides give the network size,
    --method the path (murauer: mapped; synth_only for the synthetic-only pre-trained model)."""
    from murauer_dist.import_original import import_original_command  # lazy: fast cli
    import_original_command(source, out, preset=preset, overrides=overrides, method=method)


COMMANDS = {
    "print-config": print_config,
    "synth-data": synth_data,
    "data-report": data_report,
    "make-shards": make_shards,
    "train": train,
    "evaluate": evaluate,
    "train-refiner": train_refiner,
    "predict": predict,
    "score": score,
    "bench": bench,
    "sweep": sweep,
    "demo": demo,
    "experiment": experiment,
    "export": export,
    "import-original": import_original,
}


def main(argv: list[str] | None = None) -> None:
    """Run a command; a UserError prints one line (`--debug` or MURAUER_DEBUG=1: the traceback)."""
    argv = sys.argv[1:] if argv is None else argv
    # The deepspeed launcher appends --local_rank=N; LOCAL_RANK in the environment says the same.
    argv = [arg for arg in argv if not arg.startswith("--local_rank")]
    debug = "--debug" in argv or os.environ.get("MURAUER_DEBUG", "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        fire.Fire(COMMANDS, command=argv, name="murauer-dist")
    except UserError as err:
        if debug:
            raise
        sys.exit(one_line(err))
    except Exception as err:          # a fault of the machine (full disk, read-only folder ...) is one line too
        fault = machine_error(err)
        if fault is None or debug:
            raise
        sys.exit(one_line(fault))


def one_line(err: BaseException) -> str:
    """`murauer-dist: message`, with any live credential (tracking/secrets.py) replaced."""
    from murauer_dist.tracking.secrets import redact_text  # lazy: fast cli
    return redact_text(f"murauer-dist: {err}")


if __name__ == "__main__":
    main()
