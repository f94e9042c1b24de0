"""`murauer-dist bench gpu-check OUT_DIR [--device cuda|cpu]` (launch/gpu-check.sh): check a new GPU node.

One run, at most ~8 minutes on one H100-class GPU, prints a table and writes OUT_DIR/gpu-check.json
(and the table as OUT_DIR/gpu-check.md; both atomic, rewritten after every section):

    environment   torch / CUDA / cuDNN / NCCL versions, GPUs, driver, CPU; which of DALI, DeepSpeed,
                  wandb (and the light dependencies) import, each probed in its own process
    gpu_tests     `pytest -m gpu` on the repository's tests: passed / failed / skipped / errors
    dataset       a small procedural dataset made here (synth-data) and cut into shards with the
                  preset's crop settings (make-shards; 128x128 crops for nyu)
    train_step    the preset's MURAUER step (stage 2, all five streams) on in-memory batches:
                  fp32, bf16, bf16 + channels-last: iterations/s, crops/s, step ms, peak GPU memory
    loaders       the bf16 step fed by the reference loader and by DALI (GPU pipeline; CPU in
                  CPU mode) from the dataset: iterations/s, crops/s and the data-wait fraction
    ddp           the bf16 step under DistributedDataParallel in a one-rank process group
                  (nccl; gloo in CPU mode)
    compile       bf16 + channels-last with the model torch.compile'd (compile time reported
                  apart; last, as it takes longest; backend inductor, `eager` in CPU mode, where
                  inductor takes minutes on a 2-core machine)
    memory        peak GPU memory of the whole run and of each measurement

Every section is independent: a missing package, no CUDA, or an error is reported in that
section (status "skipped" or "failed", with the reason) and the rest still runs. A time budget
(--budget-s) skips what would start after it is used up. `--device cpu` runs the same sequence
with the `tiny` preset and a few steps (the test suite does, so this check cannot rot).

Targets (one H100-class GPU, nyu preset): >= 100 MURAUER iterations/s in bf16 (>= 13,000
crops/s) with < 5 % data wait.

Modules: spec.py (section names, targets, defaults, options), probes.py (environment, gpu_tests,
dataset), measure.py (train_step, loaders, ddp, compile, memory), report.py (the table and its
verdicts against the targets), runner.py (the command: runs the sections, writes the results).
"""
from murauer_dist.bench.gpu_check.runner import Check, main
from murauer_dist.bench.gpu_check.spec import (COMPILED, DEFAULTS, SECTIONS, TARGET_CROPS_PER_S,
                                               TARGET_DATA_WAIT, TARGET_ITERS_PER_S, VARIANTS, Options, Skip)

__all__ = ["COMPILED", "DEFAULTS", "SECTIONS", "TARGET_CROPS_PER_S", "TARGET_DATA_WAIT", "TARGET_ITERS_PER_S",
           "VARIANTS", "Check", "Options", "Skip", "main"]
