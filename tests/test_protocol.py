"""The protocol that can resolve MURAUER's effect: the learning-rate schedule over a stage's progress,
the paper's baseline and ablations as method entries, and the label-efficiency experiment's cells,
restarts, aggregation, weight selection and targets (fake runs: no training here)."""
import json
import math
import signal

import numpy as np
import pytest
import torch

from murauer_dist.recipes import experiment as exp
from murauer_dist.recipes import experiment_options as options
from murauer_dist.recipes.experiment_report import check_targets, paired_differences, paired_interval, summarize
from murauer_dist.config import ConfigError, load_config, save_config
from murauer_dist.eval.result_files import write_result_file
from murauer_dist.frames.datasets import DEFAULT_DATASET, dataset_spec
from murauer_dist.batches.batch import fake_batch, stream_sizes
from murauer_dist.methods import FIVE_STREAMS, METHODS
from murauer_dist.models import build_discriminator, build_model
from murauer_dist.sweep.spec import is_validation_metric
from murauer_dist.train import loop
from murauer_dist.train.engine import current_lr
from murauer_dist.train.engine_factory import build_engines
from murauer_dist.train.fake_stream import FakeTrainStream, fake_eval_factory
from murauer_dist.train.schedule import (PAPER_EPOCHS, lr_multiplier, progress_epoch, progress_multiplier,
                                         stage_multiplier, wsd_multiplier)
from murauer_dist.train.step import model_requests, train_step

PEAK = math.exp(-0.16)                  # lambda(4), the largest multiplier of docs/method.md §5.3
LAST_MAIN = math.exp(-0.04 * 120)       # lambda(120), the paper's last stage-2 epoch: 0.0082


# ---- 1. the learning-rate multiplier over a stage's progress --------------------------------------

def test_progress_schedule_closed_forms():
    # fraction 0 is the paper's first epoch (the warm-up's start, 0.33^2), the peak comes after 3/120
    assert progress_multiplier(0.0) == lr_multiplier(1) == pytest.approx(0.33 ** 2)
    assert progress_multiplier(3 / 120) == pytest.approx(PEAK)
    assert max(progress_multiplier(s / 1000) for s in range(1001)) == pytest.approx(PEAK)
    # fraction 1 ends at the paper's last value, about 1 % of the peak
    assert progress_multiplier(1.0) == pytest.approx(LAST_MAIN)
    assert 0.009 < progress_multiplier(1.0) / PEAK < 0.011
    # monotone after the warm-up
    values = [progress_multiplier(s / 1000) for s in range(25, 1001)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError):
        progress_multiplier(1.5)


@pytest.mark.parametrize("stage,iters", [("main", 3), ("main", 7), ("pretrain", 2)])
def test_progress_equals_the_per_epoch_schedule_at_the_papers_length(stage, iters):
    epochs = PAPER_EPOCHS[stage]                 # 120 for stage 2, 150 for stage 1
    steps = epochs * iters
    for step in range(steps):
        epoch = step // iters + 1
        assert stage_multiplier("progress", stage, epoch, step, steps) == stage_multiplier("epoch", stage, epoch,
                                                                                         step, steps)


def test_a_short_stage_anneals_like_the_paper_only_with_progress():
    epochs, iters = 10, 200                       # the embedded presets' stage 2
    steps = epochs * iters
    last_epoch = stage_multiplier("epoch", "main", epochs, steps - 1, steps)
    last_progress = stage_multiplier("progress", "main", epochs, steps - 1, steps)
    assert last_epoch == pytest.approx(0.670, abs=1e-3)            # the per-epoch values, unchanged
    assert last_progress == pytest.approx(LAST_MAIN)               # the paper's 120th epoch
    assert stage_multiplier("progress", "main", 1, 0, steps) == pytest.approx(0.1089)
    # stage 1 maps onto the paper's 150 epochs: it ends at lambda(150) = exp(-6)
    assert stage_multiplier("progress", "pretrain", 15, 15 * iters - 1, 15 * iters) == pytest.approx(math.exp(-6))
    assert progress_epoch(0, 7) == 1 and progress_epoch(6, 7) == 103 and progress_epoch(50, 7) == 120


@pytest.mark.parametrize("steps,anneal", [(1200, 0.25), (2000, 0.25), (2000, 0.5), (150, 1.0)])
def test_wsd_holds_the_peak_then_decays_to_the_papers_last_value(steps, anneal):
    values = [stage_multiplier("wsd", "main", 1, step, steps, anneal) for step in range(steps)]
    warmup = -(-3 * steps // 120)                 # the paper's 3 warm-up epochs of 120, as "progress" has them
    assert values[:warmup] == [stage_multiplier("progress", "main", 1, s, steps) for s in range(warmup)]
    decay_start = math.ceil((1 - anneal) * steps)
    assert values[warmup:decay_start] == [pytest.approx(PEAK)] * (decay_start - warmup)
    assert values[-1] == pytest.approx(LAST_MAIN)                  # the same end as "progress"
    decay = values[max(warmup, decay_start):]      # anneal 1.0: the decay runs from the warm-up's end
    assert all(a > b for a, b in zip(decay, decay[1:])) and decay[0] < PEAK
    # exponential in the decay: equal log steps
    logs = [math.log(v) for v in decay]
    assert max(abs((a - b) - (logs[0] - logs[1])) for a, b in zip(logs, logs[1:])) < 1e-9
    # most of a short stage at the peak: at least twice the average rate of "progress" (0.19 of the peak)
    mean_progress = sum(stage_multiplier("progress", "main", 1, s, steps) for s in range(steps)) / steps
    if anneal <= 0.5:
        assert sum(values) / steps > 2.0 * mean_progress


def test_wsd_rejects_an_anneal_fraction_outside_0_1():
    with pytest.raises(ValueError, match="anneal_fraction"):
        wsd_multiplier(0, 10, anneal_fraction=0.0)
    with pytest.raises(ConfigError, match="optim.anneal_fraction"):
        load_config("tiny", ["optim.anneal_fraction=1.5"])


def test_presets_choose_their_schedule():
    assert load_config("nyu").optim.schedule == "epoch"              # the paper's per-epoch multiplier exactly
    assert load_config("label-efficiency").optim.schedule == "wsd"                  # demo-cpu's
    assert load_config("label-efficiency").train.epochs == 10
    with pytest.raises(ConfigError, match="optim.schedule"):
        load_config("tiny", ["optim.schedule=cosine"])


def test_label_efficiency_runs_on_its_own_nyu_fit_data():
    """The experiment's data follow NYU's recording (realism nyu-fit) in a folder no default-profile dataset uses."""
    experiment, demo = load_config("label-efficiency"), load_config("demo-cpu")
    assert experiment.data.synth_realism == "nyu-fit" and demo.data.synth_realism == "default"
    assert experiment.data.root != demo.data.root and experiment.data.shards != demo.data.shards


class _StopOnce(FakeTrainStream):
    """A fake stream that sends SIGTERM once, at (stage, epoch, position) = `at`."""
    at = None

    def __init__(self, cfg, stage, rank=0, device="cpu"):
        super().__init__(cfg, stage, rank, device)
        self.stage = stage

    def make_batch(self, epoch, position):
        if (self.stage, epoch, position) == _StopOnce.at:
            _StopOnce.at = None
            signal.raise_signal(signal.SIGTERM)
        return super().make_batch(epoch, position)


def _recorded_rates(monkeypatch, cfg, stop_at=None):
    """[(stage, model lr, discriminator lr)] of every step a `train` run (and its resume) takes."""
    rates = []

    def recording(engines, batch, cfg, stage, **kwargs):
        rates.append((stage, current_lr(engines["model"]), current_lr(engines["disc"])))
        return train_step(engines, batch, cfg, stage, **kwargs)

    monkeypatch.setattr(loop, "train_step", recording)
    factory = lambda c, stage, rank, world, device: _StopOnce(c, stage, rank, device)  # noqa: E731
    _StopOnce.at = stop_at
    results = [loop.train(cfg, stream_factory=factory, eval_factory=fake_eval_factory)]
    if results[0]["status"] == "stopped":
        results.append(loop.train(cfg, stream_factory=factory, eval_factory=fake_eval_factory))
    return rates, results


def test_progress_rates_follow_the_closed_form_and_survive_a_resume(tmp_path, monkeypatch):
    def cfg(name):
        return load_config("tiny", [f"train.out={tmp_path / name}", "optim.schedule=progress", "train.epochs=3",
                                    "train.iters_per_epoch=4", "train.checkpoint_every=100",
                                    "logging.wandb_mode=disabled"])
    full, _ = _recorded_rates(monkeypatch, cfg("full"))
    main = [rate for stage, rate, _ in full if stage == "main"]
    base = cfg("full").optim.lr
    assert main == pytest.approx([base * lr_multiplier(step * 120 // 12 + 1) for step in range(12)])
    assert all(model == disc for _, model, disc in full)
    cut, results = _recorded_rates(monkeypatch, cfg("cut"), stop_at=("main", 2, 1))
    assert [r["status"] for r in results] == ["stopped", "done"]
    assert cut == full                                            # the same rate at every step


# ---- 2. the paper's baseline and ablations ---------------------------------------------------------

MURAUER_TERMS = {"L_synth", "L_real", "L_emb", "L_view", "L_adv"}


def test_baseline_and_ablations_are_murauer_with_terms_off():
    assert METHODS["murauer"].streams == FIVE_STREAMS and set(METHODS["murauer"].terms) == MURAUER_TERMS
    for name, missing in (("real_synth", {"L_view", "L_adv"}), ("dm_only", {"L_view"}), ("view_only", {"L_adv"})):
        method = METHODS[name]
        assert method.streams == FIVE_STREAMS, name                    # same streams and steps as MURAUER
        assert set(method.terms) == MURAUER_TERMS - missing, name
        assert {t: w for t, w in method.terms.items()} == {t: w for t, w in METHODS["murauer"].terms.items()
                                                          if t not in missing}, name
        assert method.mapped
        sizes = stream_sizes(load_config("tiny", [f"train.method={name}"]), "main")
        assert all(sizes[stream] > 0 for stream in FIVE_STREAMS), name
    assert METHODS["dm_only"].label == "Real & Synth + distribution matching only"
    assert METHODS["view_only"].label == "Real & Synth + view prediction only"
    for preset, name in (("real-synth", "real_synth"), ("dm-only", "dm_only"), ("view-only", "view_only")):
        assert load_config(preset).train.method == name


def _setup(method, seed=0):
    cfg = load_config("tiny", [f"train.method={method}"])
    torch.manual_seed(seed)
    model, disc = build_model(cfg), build_discriminator(cfg)
    return cfg, model, build_engines(cfg, model, disc, 0, 1, "cpu")


@pytest.mark.parametrize("method,terms,disc_step", [
    ("real_synth", {"L_synth", "L_real", "L_emb"}, False),
    ("dm_only", {"L_synth", "L_real", "L_emb", "L_adv"}, True),
    ("view_only", {"L_synth", "L_real", "L_emb", "L_view"}, False)])
def test_each_entry_trains_exactly_its_terms(method, terms, disc_step):
    cfg, model, engines = _setup(method)
    batch = fake_batch(stream_sizes(cfg, "main"), cfg.data.crop_size, cfg.model.num_joints, seed=1, labeled_fraction=1.0)
    out = model(model_requests(batch, cfg, "main"))
    assert ("view" in out["views_real"]) == ("L_view" in terms)          # the decoder runs only for L_view
    assert "unlabeled_real" in out and "unlabeled_synth" in out
    result = train_step(engines, batch, cfg)
    assert {k for k in result if k.startswith("L_") and k not in ("L_total", "L_disc")} == terms
    assert ("L_disc" in result) == disc_step
    assert result["L_real"] > 0 and result["L_emb"] > 0


def test_the_baseline_keeps_murauers_batchnorm_running_statistics():
    """Unlabeled passes add no term to real_synth, but they move the running statistics evaluation uses:
    forwarding them keeps those statistics equal to MURAUER's; leaving them undrawn would not."""
    cfg = load_config("tiny")
    batch = fake_batch(stream_sizes(cfg, "main"), cfg.data.crop_size, cfg.model.num_joints, seed=3)

    def running_stats(method, drop=()):
        torch.manual_seed(0)
        model = build_model(cfg)
        model.train()
        method_cfg = load_config("tiny", [f"train.method={method}"])
        model(model_requests({k: v for k, v in batch.items() if k not in drop}, method_cfg, "main"))
        return [b.clone() for name, b in model.encoder.named_buffers() if "running" in name]

    murauer = running_stats("murauer")
    assert all(torch.equal(a, b) for a, b in zip(running_stats("real_synth"), murauer))
    undrawn = running_stats("real_synth", drop=("unlabeled_real", "unlabeled_synth"))
    assert not all(torch.equal(a, b) for a, b in zip(undrawn, murauer))


def test_stream_rules_cover_the_new_entries():
    with pytest.raises(ConfigError, match="train.method=view_only"):
        load_config("tiny", ["train.method=view_only", "loader.views=0"])
    with pytest.raises(ConfigError, match="train.method=dm_only"):
        load_config("tiny", ["train.method=dm_only", "loader.unlabeled_real=0"])
    load_config("tiny", ["train.method=dm_only", "loader.views=0"])           # dm_only has no L_view
    load_config("tiny", ["train.method=view_only", "loader.unlabeled_real=0", "loader.unlabeled_synth=0"])


# ---- 3. the experiment: cells, restarts, selection, aggregation, targets ---------------------------

def test_default_cells():
    cells = exp.plan_cells(exp.DEFAULT_METHODS, exp.DEFAULT_NS, exp.DEFAULT_SEEDS)
    count = {method: sum(cell.method == method for cell in cells) for method in exp.DEFAULT_METHODS}
    assert count == {"synth_only": 3, "real_synth": 6, "dm_only": 3, "view_only": 3, "murauer": 6}
    assert {cell.n for cell in cells if cell.method in exp.ABLATIONS} == {10}
    assert {cell.n for cell in cells if cell.method == "synth_only"} == {None}
    assert len({cell.name for cell in cells}) == len(cells)
    cell = exp.Cell("murauer", 100, 2)
    assert cell.name == "murauer-n100-s2"
    assert cell.overrides(exp.Path("OUT/stage1/checkpoints/final-pretrain.pt")) == [
        "train.method=murauer", "train.seed=2", "train.pretrain_epochs=0",
        "train.init_checkpoint=OUT/stage1/checkpoints/final-pretrain.pt", "data.n_labeled=100"]


def test_each_training_seed_is_paired_with_its_label_seed():
    """Training seed i trains with label seed i (the labeled subset varies with the seed); Synth only,
    which uses no labels, varies the training seed only."""
    cells = exp.plan_cells(("synth_only", "real_synth", "murauer"), (10, 100), (1, 2), (100,),
                           {"lambda_g": (1e-4, 1e-3)}, label_seeds=(7, 8))
    assert [c.name for c in cells if c.method == "synth_only"] == ["synth_only-s1", "synth_only-s2"]
    assert {c.name for c in cells if c.method == "real_synth"} == {
        "real_synth-n10-s1-l7", "real_synth-n10-s2-l8", "real_synth-n100-s1-l7", "real_synth-n100-s2-l8"}
    assert {(c.seed, c.label_seed) for c in cells if c.method == "murauer"} == {(1, 7), (2, 8)}
    assert "murauer-n10-s2-l8-lambda_g=0.001" in {c.name for c in cells}
    stage1 = exp.Path("OUT/stage1/checkpoints/final-pretrain.pt")
    assert exp.Cell("real_synth", 10, 1, (), 7).overrides(stage1)[-2:] == ["data.n_labeled=10", "data.label_seed=7"]
    assert not any("label_seed" in item for c in cells if c.method == "synth_only" for item in c.overrides(stage1))
    # default: each training seed is its own label seed; "fixed": the config's data.label_seed for every cell
    assert options.parse_label_seeds("", (1, 2, 3)) == (1, 2, 3) and options.parse_label_seeds(None, (4,)) == (4,)
    assert options.parse_label_seeds("11,12,13", (1, 2, 3)) == (11, 12, 13)
    assert options.parse_label_seeds("fixed", (1, 2)) is None
    assert exp.plan_cells(("real_synth",), (10,), (1, 2), (), None, None)[0].name == "real_synth-n10-s1"
    with pytest.raises(exp.ExperimentError, match="one label seed per training seed"):
        options.parse_label_seeds("5,6", (1, 2, 3))
    with pytest.raises(exp.ExperimentError, match="--label-seeds must be distinct"):
        options.parse_label_seeds("5,5,6", (1, 2, 3))
    with pytest.raises(exp.ExperimentError, match="one label seed per training seed"):
        exp.experiment_command("label-efficiency", seeds="1,2", label_seeds="3")


def test_cells_with_weight_candidates_and_option_errors():
    select = options.parse_select("lambda_g=1e-4,1e-3;loss.lambda_m=1e-5")
    assert select == {"lambda_g": (1e-4, 1e-3), "lambda_m": (1e-5,)}
    cells = exp.plan_cells(("real_synth", "view_only", "murauer"), (100,), (1, 2), (100,), select)
    names = {cell.name for cell in cells}
    assert {"real_synth-n100-s1", "view_only-n100-s2-lambda_g=0.001",
            "murauer-n100-s1-lambda_g=0.0001-lambda_m=1e-05"} <= names
    assert len(cells) == 2 + 2 * 2 + 2 * 2
    with pytest.raises(exp.ExperimentError, match="ablation"):
        exp.plan_cells(("dm_only",), (10, 1000), (1,), (100,))
    with pytest.raises(exp.ExperimentError, match="no method"):
        exp.plan_cells(("synth_only", "real_synth"), (100,), (1,), (100,), {"lambda_g": (1e-4,)})
    for bad in ("lambda_q=1", "lambda_g", "lambda_g=a", "lambda_g=-1"):
        with pytest.raises(exp.ExperimentError):
            options.parse_select(bad)
    assert options.parse_ints((1, 2, 3), "--seeds") == (1, 2, 3) and options.parse_ints(100, "--ns") == (100,)
    assert options.parse_methods(("murauer", "real_synth")) == ("murauer", "real_synth")
    with pytest.raises(exp.ExperimentError, match="unknown method"):
        options.parse_methods("murauer,mauerer")
    with pytest.raises(exp.ExperimentError, match="validation split only"):
        exp.experiment_command("label-efficiency", select="lambda_g=1e-3", select_on="test")


# The fake runs' errors (mm): method base - a small seed effect; twins 2 mm better.
BASE = {"synth_only": 22.0, "real_synth": 17.0, "dm_only": 15.6, "view_only": 15.8, "murauer": 12.5}


def _fake_error(run_dir):
    method, *rest = run_dir.name.split("-")
    n = next((int(part[1:]) for part in rest if part.startswith("n") and part[1:].isdigit()), 100)
    seed = next(int(part[1:]) for part in rest if part.startswith("s"))
    shrink = 0.0 if method == "synth_only" else 0.5 * math.log10(n / 100)
    return BASE[method] - shrink + 0.1 * seed


def _write_predictions(folder, frames, shift_mm):
    """An evaluation's frames.txt and results_xyz.txt: every joint of frame row k at a fixed pose moved by
    (k + 1) * shift_mm (so the twin's and the real frame's predictions lie (k + 1) * |shift| apart)."""
    spec = dataset_spec(DEFAULT_DATASET)
    joints = np.arange(spec.joints.count)
    base = np.stack([joints * 10.0, joints * -5.0, np.full(len(joints), 400.0)], axis=-1)
    pred = np.stack([base + (row + 1) * np.asarray(shift_mm) for row in range(len(frames))])
    folder.mkdir(parents=True, exist_ok=True)
    write_result_file(folder / "results_xyz.txt", pred, "xyz", spec.camera)
    (folder / "frames.txt").write_text("".join(f"{frame}\n" for frame in frames))


def test_per_frame_gap_of_two_result_files(tmp_path):
    spec = dataset_spec(DEFAULT_DATASET)
    _write_predictions(exp.eval_dir(tmp_path, "real"), [3, 5, 8], (0.0, 0.0, 0.0))
    _write_predictions(exp.eval_dir(tmp_path, "synth"), [3, 5, 8], (3.0, 4.0, 0.0))     # rows 5, 10, 15 mm apart
    assert exp.frame_gap(tmp_path, spec) == pytest.approx(10.0, abs=1e-3)
    _write_predictions(exp.eval_dir(tmp_path, "synth"), [3, 5, 9], (3.0, 4.0, 0.0))
    with pytest.raises(exp.ExperimentError, match="different test frames"):
        exp.frame_gap(tmp_path, spec)


@pytest.fixture
def fake_workflow(monkeypatch):
    """The experiment with training and evaluation replaced by files: every call is recorded."""
    calls = {"train": [], "evaluate": [], "labeled": []}

    def run_training(preset, overrides, log_file=None):
        cfg = load_config(preset, overrides)
        run_dir = exp.Path(cfg.train.out)
        calls["train"].append(run_dir.name)
        (run_dir / "checkpoints").mkdir(parents=True)
        for name in ("final-pretrain.pt", "final-main.pt"):
            (run_dir / "checkpoints" / name).write_bytes(b"")
        save_config(cfg, run_dir / "config.yaml")
        val = 10.0 + abs(math.log10(cfg.loss.lambda_g / 1e-3))          # lambda_g = 1e-3 is best on val
        (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 5, "main/val_mean_error_mm": val}) + "\n")

    def evaluate_run(run_dir, out=None, domain="real", split="test"):
        calls["evaluate"].append((run_dir.name, domain, split))
        error = _fake_error(run_dir) - (2.0 if domain == "synth" else 0.0) - (5.0 if split == "labeled" else 0.0)
        metrics = {"mean_error_mm": error, "subject1_mean_error_mm": None, "subject2_mean_error_mm": None}
        target = exp.eval_dir(run_dir, domain, split)
        target.mkdir(parents=True)
        # the twins' predictions lie 5 and 10 mm from the real frames' (gap per frame 7.5 mm)
        _write_predictions(target, [0, 1], (0.0, 0.0, 0.0) if domain == "real" else (3.0, 4.0, 0.0))
        (target / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    monkeypatch.setattr(exp.workflow, "run_training", run_training)
    monkeypatch.setattr(exp.workflow, "evaluate_run", evaluate_run)
    monkeypatch.setattr(exp.workflow, "ensure_dataset", lambda cfg: None)
    monkeypatch.setattr(exp.workflow, "ensure_shards", lambda cfg, preset, overrides: None)
    monkeypatch.setattr(exp, "check_labeled_request",                                 # no shards in the fake
                        lambda shards, n, seed: calls["labeled"].append((n, seed, len(calls["train"]))))
    return calls


def test_experiment_runs_every_cell_once_and_skips_finished_ones(tmp_path, fake_workflow, capsys):
    report = exp.experiment_command("label-efficiency", preset="tiny", out=str(tmp_path), seeds=(1, 2, 3),
                                    ns=(10, 100, 1000), ablation_ns="100")
    trained = fake_workflow["train"]
    assert trained[0] == "stage1" and len(trained) == 1 + 27 and len(set(trained)) == len(trained)
    assert len(fake_workflow["evaluate"]) == 4 * 27       # test and labeled training frames, real and twins
    assert {split for _, _, split in fake_workflow["evaluate"]} == {"test", "labeled"}
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["seeds"] == [1, 2, 3] and results["label_seeds"] == [1, 2, 3] and len(results["cells"]) == 27
    # every (n, label seed) is checked before stage 1 trains; the cells record their label seed
    assert sorted(fake_workflow["labeled"]) == [(n, seed, 0) for n in (10, 100, 1000) for seed in (1, 2, 3)]
    assert {(c["seed"], c["label_seed"]) for c in results["cells"] if c["method"] == "murauer"} == {(1, 1), (2, 2),
                                                                                                 (3, 3)}
    assert {c["label_seed"] for c in results["cells"] if c["method"] == "synth_only"} == {None}
    assert "murauer-n100-s2-l2" in trained
    # paired differences against Real & Synth: every labeled method at each n it ran, over 3 pairs
    assert {(e["method"], e["n"]) for e in results["paired"]} == {("murauer", n) for n in (10, 100, 1000)} | {
        ("dm_only", 100), ("view_only", 100)}
    (paired,) = [e for e in results["paired"] if (e["method"], e["n"]) == ("murauer", 100)]
    assert paired["pairs"] == [[1, 1], [2, 2], [3, 3]] and paired["mean"] == pytest.approx(-4.5)
    row = "| MURAUER (full) | 100 | 1/1, 2/2, 3/3 | -4.50, -4.50, -4.50 | -4.50 | [-4.50, -4.50] | 0.74x |"
    assert row in (tmp_path / "results.md").read_text()
    real = results["summary"]["murauer"]["100"]["real"]
    assert real["mean"] == pytest.approx(12.5 + 0.2) and real["std"] == pytest.approx(0.1)
    assert real["values"] == pytest.approx([12.6, 12.7, 12.8])
    assert results["summary"]["synth_only"]["10"] == results["summary"]["synth_only"]["1000"]
    assert results["summary"]["real_synth"]["100"]["gap"]["mean"] == pytest.approx(2.0)
    assert results["summary"]["real_synth"]["100"]["train_real"]["mean"] == pytest.approx(
        results["summary"]["real_synth"]["100"]["real"]["mean"] - 5.0)
    assert results["summary"]["real_synth"]["100"]["shown"] is None          # tiny's data: labels are shown poses
    assert results["summary"]["real_synth"]["100"]["gap_per_frame"]["mean"] == pytest.approx(7.5, abs=1e-3)
    assert [cell["gap_per_frame"] for cell in results["cells"]] == [pytest.approx(7.5, abs=1e-3)] * 27
    text = (tmp_path / "results.md").read_text()
    assert ("| n=100 | real test | twins | gap (difference of means) | gap per frame | labeled train real | "
            "labeled train twins |") in text and "are differences of means" in text
    assert [t["holds"] for t in report["targets"]] == [True, None, True, True]    # no ablations at n = 10
    assert (tmp_path / "label_efficiency.png").stat().st_size > 0
    assert (tmp_path / "error_sources.png").stat().st_size > 0
    print((tmp_path / "results.md").read_text())              # the example in the report (pytest -s)
    # started again: nothing is trained or evaluated twice, the same results
    fake_workflow["train"].clear()
    fake_workflow["evaluate"].clear()
    again = exp.experiment_command("label-efficiency", preset="tiny", out=str(tmp_path), seeds="1,2,3",
                                   ns="10,100,1000", ablation_ns="100")
    assert fake_workflow["train"] == [] and fake_workflow["evaluate"] == []
    assert again["summary"] == report["summary"]
    # a finished cell trained with other settings is not silently reused
    with pytest.raises(exp.ExperimentError, match=r"train.epochs 1 -> 2"):
        exp.experiment_command("label-efficiency", preset="tiny", out=str(tmp_path), overrides=("train.epochs=2",),
                               seeds=1)


def test_weights_are_chosen_on_validation_and_only_chosen_cells_see_the_test_split(tmp_path, fake_workflow):
    report = exp.experiment_command("label-efficiency", preset="tiny", out=str(tmp_path), methods="real_synth,murauer",
                                    ns="100", seeds="1,2", select="lambda_g=1e-4,1e-3,1e-2")
    assert len(fake_workflow["train"]) == 1 + 2 + 3 * 2
    (choice,) = [c for c in report["selection"] if c["method"] == "murauer"]
    assert [entry["val_mean_error_mm"] for entry in choice["tried"]] == pytest.approx([11.0, 10.0, 11.0])
    assert choice["chosen"] == {"lambda_g": 1e-3} and choice["used"]["lambda_g"] == 1e-3
    evaluated = {name for name, _, _ in fake_workflow["evaluate"]}
    assert evaluated == {"real_synth-n100-s1-l1", "real_synth-n100-s2-l2", "murauer-n100-s1-l1-lambda_g=0.001",
                         "murauer-n100-s2-l2-lambda_g=0.001"}
    text = (tmp_path / "results.md").read_text()
    assert "lambda_g=0.0001 (11.00); lambda_g=0.001 (10.00); lambda_g=0.01 (11.00)" in text
    with pytest.raises(exp.ExperimentError, match="val_fraction"):
        exp.experiment_command("label-efficiency", preset="tiny", out=str(tmp_path / "x"),
                               overrides=("data.val_fraction=0",), select="lambda_g=1e-4,1e-3")


def test_a_choice_reads_the_validation_metric_only(tmp_path):
    assert is_validation_metric(exp.SELECTION_METRIC)
    records = [{"step": 5, "main/val_mean_error_mm": 11.0, "main/test_mean_error_mm": 3.0},
               {"step": 6, "main/test_mean_error_mm": 2.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    assert exp.validation_error(tmp_path) == 11.0
    chosen, (record,) = exp.choose([exp.Cell("murauer", 100, 1, (("lambda_g", 1e-3),)),
                                    exp.Cell("murauer", 100, 1, (("lambda_g", 1e-4),))],
                                   lambda cell: exp.validation_error(tmp_path) + cell.weights[0][1])
    assert record["chosen"] == {"lambda_g": 1e-4} and record["by"] == "lowest mean validation error"


def _records(errors: dict) -> list[dict]:
    """Cell records from {(method, n): [error per seed pair]}: the i-th error has training and label seed i + 1."""
    return [{"method": m, "n": n, "seed": index + 1, "label_seed": None if n is None else index + 1, "real": e,
             "synth": e, "gap": 0.0, "subject1": None, "subject2": None}
            for (m, n), values in errors.items() for index, e in enumerate(values)]


def _summary(errors: dict) -> dict:
    """A summary from {(method, n): [error per seed]}."""
    return summarize(_records(errors), (10, 100))


def _targets(errors: dict) -> list[dict]:
    records = _records(errors)
    return check_targets(summarize(records, (10, 100)), (10, 100), paired_differences(records))


def _t_quantile_2(p: float) -> float:
    """Student's t quantile with 2 degrees of freedom, in closed form."""
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


def test_paired_differences_against_the_closed_form():
    result = paired_interval([1.0, 2.0, 3.0])
    half_width = _t_quantile_2(0.975) * 1.0 / math.sqrt(3)            # std 1, 2 degrees of freedom
    assert result["mean"] == pytest.approx(2.0) and result["std"] == pytest.approx(1.0)
    assert result["half_width"] == pytest.approx(half_width) and half_width == pytest.approx(2.4841, abs=1e-4)
    assert result["ci95"] == pytest.approx([2.0 - half_width, 2.0 + half_width])
    single = paired_interval([-1.5])
    assert single["ci95"] is None and single["half_width"] is None and "no interval" in single["note"]
    # only the (training seed, label seed) pairs both methods ran are compared
    records = _records({("real_synth", 100): [10.0, 20.0, 30.0], ("murauer", 100): [9.0, 18.0, 27.0],
                        ("synth_only", None): [40.0], ("dm_only", 100): [11.0]})
    records.append({**records[0], "seed": 9, "label_seed": 9, "real": 99.0})           # baseline only
    (dm_only, murauer) = sorted(paired_differences(records), key=lambda entry: entry["method"])
    assert murauer["pairs"] == [[1, 1], [2, 2], [3, 3]] and murauer["differences"] == pytest.approx([-1, -2, -3])
    assert murauer["mean"] == pytest.approx(-2.0) and murauer["ci95"][1] == pytest.approx(-2.0 + half_width)
    assert murauer["ratio_of_means"] == pytest.approx(54 / 60)
    assert dm_only["pairs"] == [[1, 1]] and dm_only["ci95"] is None


def test_aggregation_and_targets_on_fake_results():
    good = {("synth_only", None): [22.0, 22.2, 22.4], ("real_synth", 10): [20.0, 20.2, 20.4],
            ("real_synth", 100): [16.0, 16.2, 16.4], ("dm_only", 100): [14.0, 14.1, 14.2],
            ("view_only", 100): [14.5, 14.6, 14.7], ("murauer", 10): [17.0, 17.1, 17.2],
            ("murauer", 100): [12.0, 12.2, 12.4]}
    summary = _summary(good)
    assert summary["real_synth"]["100"]["real"]["mean"] == pytest.approx(16.2)
    assert summary["real_synth"]["100"]["real"]["std"] == pytest.approx(0.2)          # sample std (n - 1)
    assert summary["synth_only"]["10"]["real"]["seeds"] == 3
    assert [t["holds"] for t in _targets(good)] == [True, None, True, True]         # no ablations at n = 10
    at_ten = {**good, ("dm_only", 10): [18.4, 18.5, 18.6], ("view_only", 10): [18.8, 18.9, 19.0]}
    assert [t["holds"] for t in _targets(at_ten)] == [True, True, True, True]
    # 0.8x holds but the paired differences (-6, -4, -2) scatter: the 95 % interval reaches above 0
    noisy = {**good, ("murauer", 100): [10.0, 12.2, 14.4]}
    first = _targets(noisy)[0]
    assert first["holds"] is False and "0.75x" in first["detail"] and "interval [-8.97, +0.97]" in first["detail"]
    # the seed pairs scatter both methods alike: the paired differences (-4, -3.8, -3.6) do not
    shared = {**good, ("real_synth", 100): [14.0, 16.0, 18.0], ("murauer", 100): [10.0, 12.2, 14.4]}
    assert _targets(shared)[0]["holds"] is True
    # a clear paired difference but not 0.8x
    close = {**good, ("murauer", 100): [13.5, 13.6, 13.7]}
    assert _targets(close)[0]["holds"] is False
    # an ablation worse than the baseline breaks the paper's order at n = 100, not the three-method order
    swapped = {**good, ("view_only", 100): [16.5, 16.6, 16.7]}
    assert [t["holds"] for t in _targets(swapped)] == [True, None, False, True]
    # MURAUER worse than the baseline at n = 10
    worse = {**good, ("murauer", 10): [20.5, 20.6, 20.7]}
    assert _targets(worse)[3]["holds"] is False
    # one seed pair: no interval, so the first target cannot be decided; missing cells: not measured
    single = {key: values[:1] for key, values in good.items()}
    assert _targets(single)[0]["holds"] is None and "one pair: no interval" in _targets(single)[0]["detail"]
    partial = {key: values for key, values in good.items() if key[0] not in exp.ABLATIONS}
    assert [t["holds"] for t in _targets(partial)] == [True, None, None, True]
    assert check_targets(_summary(good), (10, 100))[0]["holds"] is None       # no paired differences given


def test_baseline_and_murauer_ratios_next_to_the_papers():
    """The baseline's ratio to Synth only (no MURAUER term: an anchor for the data) and MURAUER's to the
    baseline, per n, beside the paper's NYU ratios; a method not run gives no ratio."""
    from murauer_dist.recipes.experiment_report import _ratio_table, ratio_rows
    summary = _summary({("synth_only", None): [20.0, 20.0], ("real_synth", 10): [19.0, 19.4],
                        ("real_synth", 100): [15.0, 15.0], ("murauer", 10): [15.2, 15.2]})
    rows = {row["n"]: row for row in ratio_rows(summary, (10, 100))}
    assert rows[10]["baseline_over_synth"] == pytest.approx(19.2 / 20.0)
    assert rows[10]["paper_baseline_over_synth"] == 0.97 and rows[100]["paper_baseline_over_synth"] == 0.74
    assert rows[10]["murauer_over_baseline"] == pytest.approx(15.2 / 19.2)
    assert rows[100]["murauer_over_baseline"] is None and rows[100]["paper_murauer_over_baseline"] == 0.77
    table = "\n".join(_ratio_table(list(rows.values())))
    assert "| Real & Synth / Synth only | 0.96x | 0.75x |" in table and "| MURAUER / Real & Synth | 0.79x | - |" in table


def test_view_decoder_loss_first_and_last_tenth(tmp_path):
    """The view decoder's own loss curve, summarised per cell from the run's metrics.jsonl; a run without
    view prediction has none, and the report shows the ratio end / start."""
    import json
    from murauer_dist.recipes.experiment import view_loss
    from murauer_dist.recipes.experiment_report import _view_loss_table
    lines = [{"step": step, "main/L_view": 100.0 - step} for step in range(1, 41)] + [{"step": 41, "main/L_total": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    got = view_loss(tmp_path)
    assert got == {"view_loss_start": pytest.approx(97.5), "view_loss_end": pytest.approx(61.5)}   # steps 1-4, 37-40
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "metrics.jsonl").write_text(json.dumps({"step": 1, "main/L_total": 1.0}) + "\n")
    assert view_loss(tmp_path / "plain") is None
    records = [{"method": "view_only", "n": 10, "seed": seed, "real": 20.0, "synth": 19.0, "gap": 1.0,
                "view_loss_start": 100.0, "view_loss_end": end} for seed, end in ((1, 60.0), (2, 40.0))]
    table = "\n".join(_view_loss_table(summarize(records, (10,)), ["real_synth", "view_only"], (10,)))
    assert "| 10 | 100.00 ± 0.00 | 50.00 ± 14.14 | 0.50x |" in table
