"""`murauer-dist bench gpu-check OUT_DIR [--device cuda|cpu]` (launch/gpu-check.sh): check a new GPU node.

One run, at most ~10 minutes on one H100-class GPU, prints a table and writes OUT_DIR/gpu-check.json
(and the table as OUT_DIR/gpu-check.md; both atomic, rewritten after every section):

    environment   torch / CUDA / cuDNN / NCCL versions, GPUs, driver, CPU, thread count; which of
                  DALI, DeepSpeed, wandb (and the light dependencies) import, each probed in its own
                  process; the C and C++ compilers and whether they build a shared library (inductor
                  and triton need one)
    gpu_tests     `pytest -m gpu` on the repository's tests: passed / failed / skipped / errors
    dataset       a small procedural dataset made here (synth-data, train and test frames) and cut
                  into shards with the preset's crop settings (make-shards; 128x128 crops for nyu)
    train_step    the preset's MURAUER step (stage 2, all five streams) on in-memory batches:
                  fp32, bf16, bf16 + channels-last: iterations/s, crops/s, step ms, peak GPU memory
    loaders       the bf16 step fed by the reference loader and by DALI (GPU pipeline; CPU in
                  CPU mode) from the dataset, at the training's loader.num_threads: iterations/s,
                  crops/s and the data-wait fraction
    dali_parity   the eval loader's crops and targets, DALI GPU pipeline against DALI CPU pipeline
                  on the same test frames (CPU mode: DALI CPU against the reference loader): max
                  |difference|, equal to float tolerance
    rollover      the training stream over short epochs with the bf16 step between batches: the
                  data wait at each epoch's first step against the median
    ddp           the bf16 step under DistributedDataParallel in a one-rank process group
                  (nccl; gloo in CPU mode)
    deepspeed     the bf16 step on one-rank DeepSpeed ZeRO-1 engines (configs/deepspeed/zero1-bf16.json)
    train_resume  a real `murauer-dist train` on the dataset (nyu shortened to a few hundred steps;
                  tiny in CPU mode), stopped by SIGTERM in stage 2 and resumed to its planned end
    compile       bf16 + channels-last with f, m, p, g compiled by models.compile_networks (as
                  model.compile=true does) and wrapped in DDP; compile time reported apart; last,
                  as it takes longest (inductor; `eager` in CPU mode, where inductor takes minutes)
    memory        peak GPU memory of the whole run and of each measurement

Every section is independent: a missing package, no CUDA, or an error is reported in that
section (status "skipped" or "failed", with the reason) and the rest still runs. The sections that
run torch kernels run in their own processes (child.py), so a crash or a hang there is reported in
its section too. A time budget (--budget-s) skips what would start after it is used up and kills a
section process that would run past it. `--device cpu` runs the same sequence with the `tiny`
preset and a few steps (the test suite does, so this check cannot rot). launch/gpu-check.sh sets
OMP_NUM_THREADS as launch/torchrun.sh does unless it is set.

Targets (one H100-class GPU, nyu preset): >= 100 MURAUER iterations/s in bf16 (>= 13,000
crops/s) with < 5 % data wait.

Modules: spec.py (section names, targets, defaults, options, the budget), probes.py (environment,
gpu_tests, dataset), measure.py (train_step, ddp, deepspeed, compile, memory, and the step timing),
loaders.py (loaders, dali_parity, rollover), runs.py (train_resume), child.py (a section in its own
process), report.py (the table and its verdicts against the targets), runner.py (the command: runs
the sections, writes the results).
"""
from murauer_dist.bench.gpu_check.runner import Check, main
from murauer_dist.bench.gpu_check.spec import (COMPILED, DEFAULTS, SECTIONS, TARGET_CROPS_PER_S,
                                               TARGET_DATA_WAIT, TARGET_ITERS_PER_S, VARIANTS, Budget, Options, Skip)

__all__ = ["COMPILED", "DEFAULTS", "SECTIONS", "TARGET_CROPS_PER_S", "TARGET_DATA_WAIT", "TARGET_ITERS_PER_S",
           "VARIANTS", "Budget", "Check", "Options", "Skip", "main"]
