"""Run tracking (metrics file, wandb offline, console, secrets) and the local sweep runner."""
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from murauer_dist.cli import main as cli_main
from murauer_dist.config import ConfigError, load_config
from murauer_dist.errors import UserError
from murauer_dist.sweep import load_sweep, planned_runs, sweep_command
from murauer_dist.sweep.runner import RESULT_FILE
from murauer_dist.tracking import RunLogger, progress, read_metrics, scrub_secrets
from murauer_dist.tracking.console import ConsoleView, shown_metrics
from murauer_dist.tracking.secrets import REDACTED
from murauer_dist.tracking.wandb_run import RUN_ID_FILE, has_wandb_credentials, resolve_wandb_mode

REPO = Path(__file__).resolve().parent.parent
FAKE_KEY = "f0e1d2c3b4a5968778695a4b3c2d1e0f12345678"   # 40 hex characters, the shape of a real key


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """wandb with no network and every file it writes inside tmp_path."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_RUN_ID", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path


def tiny_cfg(*overrides):
    return load_config("tiny", ["logging.progress=false", *overrides])


def write_png(path: Path) -> Path:
    Image.fromarray((np.arange(64 * 64) % 256).astype(np.uint8).reshape(64, 64)).save(path)
    return path


def log_a_short_run(run_dir: Path, cfg, rank: int = 0, extra: dict | None = None) -> None:
    with RunLogger(cfg, run_dir, rank=rank, total_steps=3, desc="train") as logger:
        for step in range(3):
            logger.log(step, {"loss/total": 1.0 / (step + 1), "loss/pose": np.float32(0.5),
                              "perf/samples_per_s": 100.0 + step, **(extra or {})}, advance=1)
        logger.log(2, {"val/mean_error_mm": 21.5})
        logger.log_images(2, {"overlay": write_png(run_dir.parent / f"overlay-{rank}.png")})
        logger.summary({"test/mean_error_mm": 20.25})


# --- RunLogger -------------------------------------------------------------------------------------

def test_offline_run_writes_metrics_file_and_offline_wandb_run(wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = wandb_env / "run"
    log_a_short_run(run_dir, tiny_cfg("logging.wandb_mode=disabled"))   # the environment wins
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == [0, 1, 2, 2, 2, -1]
    assert set(records[0]) == {"step", "time", "loss/total", "loss/pose", "perf/samples_per_s"}
    assert records[1]["loss/total"] == 0.5 and records[2]["loss/pose"] == 0.5
    assert records[3] == {**records[3], "val/mean_error_mm": 21.5}
    assert records[4]["image/overlay"].endswith("overlay-0.png")
    assert records[5]["summary/test/mean_error_mm"] == 20.25
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    run_id = (run_dir / RUN_ID_FILE).read_text().strip()
    assert len(offline) == 1 and offline[0].name.endswith(run_id)
    assert (offline[0] / f"run-{run_id}.wandb").stat().st_size > 0
    # A resumed training run continues the same wandb run (and appends to the same metrics file).
    log_a_short_run(run_dir, tiny_cfg())
    assert {p.name for p in (run_dir / "wandb").glob("offline-run-*/*.wandb")} == {f"run-{run_id}.wandb"}
    assert len(read_metrics(run_dir)) == 12


def test_only_rank_zero_writes(wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    log_a_short_run(wandb_env / "rank1", tiny_cfg(), rank=1)
    assert not (wandb_env / "rank1").exists()
    log_a_short_run(wandb_env / "rank0", tiny_cfg("logging.wandb_mode=disabled"), rank=0)
    assert len(read_metrics(wandb_env / "rank0")) == 6


def test_wandb_step_stays_increasing_when_a_stage_restarts_at_zero(wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    logger = RunLogger(tiny_cfg(), wandb_env / "run")
    sent = []
    logger.wandb_run = type("Recorder", (), {"log": lambda self, values, step: sent.append(step),
                                             "finish": lambda self, exit_code: None})()
    for step in (0, 5, 5, 10, 0, 3, 0):
        logger.log(step, {"loss": 1.0})
    logger.close()
    assert sent == [0, 5, 5, 10, 11, 14, 15]
    assert [r["step"] for r in read_metrics(wandb_env / "run")] == [0, 5, 5, 10, 0, 3, 0]


def test_api_key_never_reaches_files_or_console(wandb_env, monkeypatch, capfd):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    run_dir = wandb_env / "run"
    log_a_short_run(run_dir, tiny_cfg("logging.console_every=1", "logging.progress=true"),
                    extra={"note": f"env WANDB_API_KEY={FAKE_KEY}"})
    assert any(run_dir.joinpath("wandb").glob("offline-run-*/*.wandb"))
    leaked = [p for p in wandb_env.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()]
    assert leaked == []
    assert REDACTED in read_metrics(run_dir)[0]["note"]
    printed = capfd.readouterr()
    assert FAKE_KEY not in printed.out + printed.err
    assert "[train] 3/3" in printed.err


def test_scrub_secrets_redacts_credential_entries_and_values(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    tree = {"wandb": {"api_key": "abc", "Token": "t", "project": "p"}, "client_secret": "s",
            "password": "pw", "empty_key": "", "notes": [f"key is {FAKE_KEY}", 3], "lr": 1e-3}
    scrubbed = scrub_secrets(tree)
    assert scrubbed == {"wandb": {"api_key": REDACTED, "Token": REDACTED, "project": "p"},
                        "client_secret": REDACTED, "password": REDACTED, "empty_key": "",
                        "notes": [f"key is {REDACTED}", 3], "lr": 1e-3}
    assert tree["wandb"]["api_key"] == "abc"                       # the input is not changed
    full = load_config("nyu").to_dict()
    assert scrub_secrets(full) == full                            # no real config key is hit


def test_wandb_mode_resolution(wandb_env, monkeypatch, capsys):
    assert resolve_wandb_mode("auto") == "offline"                # no credentials anywhere
    assert resolve_wandb_mode("disabled") == "disabled"
    netrc = wandb_env / "netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert has_wandb_credentials() and resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert resolve_wandb_mode("auto") == "offline"                # the entry is for another host
    netrc.write_text(f"machine wandb.example.org login user password {FAKE_KEY} stray\n")
    assert resolve_wandb_mode("auto") == "offline"                # unreadable: treated as logged out
    assert str(netrc) in capsys.readouterr().err
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_wandb_mode("online") == "offline"              # the environment wins
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(UserError, match="WANDB_MODE='sometimes'.*online, offline, disabled"):
        resolve_wandb_mode("auto")
    assert FAKE_KEY not in "".join(capsys.readouterr())


# --- console view and progress ---------------------------------------------------------------------

def test_console_prints_compact_lines_when_not_a_terminal(capsys):
    view = ConsoleView(total=20, desc="train", every=5, terminal=False)
    for step in range(20):
        view.update(1, {"loss/total": 0.25, "perf/samples_per_s": 64.0, "grad_norm": 3.0})
    view.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[1] for line in lines] == ["1/20", "5/20", "10/20", "15/20", "20/20"]
    assert "loss/total=0.25" in lines[1] and "samples_per_s=64" in lines[1] and "grad_norm" not in lines[1]
    assert "eta" in lines[1]
    trainer_names = {"main/L_total": 2.5, "main/samples_per_s": 80.0, "main/lr": 1e-4, "epoch": 1.0,
                     "main/d_real_mean": 0.1}
    assert shown_metrics(trainer_names) == {"L_total": "2.5", "samples_per_s": "80", "lr": "0.0001"}


def test_progress_helper_lines_and_rank_gating(capsys, monkeypatch):
    assert list(progress(range(50), desc="shards")) == list(range(50))
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[1] for line in lines] == [f"{n}/50" for n in range(5, 55, 5)]
    assert list(progress((i for i in range(25)), desc="gen")) == list(range(25))
    assert [line.split()[1] for line in capsys.readouterr().err.splitlines()] == ["1", "10", "25"]
    monkeypatch.setenv("RANK", "1")
    assert list(progress(range(10), desc="quiet")) == list(range(10))
    assert capsys.readouterr().err == ""


# --- sweeps ----------------------------------------------------------------------------------------

def write_sweep(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


GRID = """
name: grid-test
method: grid
metric: {name: val/mean_error_mm, goal: minimize}
parameters:
  loss.lambda_c: {values: [0.1, 0.2, 0.4]}
  data.n_labeled: {values: [10, 100]}
  train.max_steps: {value: 2}
"""


def test_grid_expansion_is_every_combination_in_file_order(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, GRID), "tiny")
    runs = planned_runs(spec)
    # wandb's engine order: names sorted (data.n_labeled < loss.lambda_c), the first varying slowest
    assert runs == [{"loss.lambda_c": c, "data.n_labeled": n, "train.max_steps": 2}
                    for n in (10, 100) for c in (0.1, 0.2, 0.4)]
    assert planned_runs(spec, max_runs=4) == runs[:4]
    spec = load_sweep(write_sweep(tmp_path, GRID.replace("{values: [10, 100]}",
                                                         "{distribution: int_uniform, min: 5, max: 7}")), "tiny")
    assert [r["data.n_labeled"] for r in planned_runs(spec)] == [5] * 3 + [6] * 3 + [7] * 3


def test_random_expansion_is_seeded_and_follows_the_distributions(tmp_path):
    text = """
method: random
run_cap: 400
metric: {name: val/mean_error_mm, goal: minimize}
parameters:
  loss.lambda_g: {distribution: log_uniform_values, min: 1.0e-6, max: 1.0e-2}
  loss.beta: {values: [0.5, 1.0, 2.0]}
  data.n_labeled: {min: 10, max: 12}
  loss.lambda_c: {min: 0.1, max: 0.3}
"""
    spec = load_sweep(write_sweep(tmp_path, text), "tiny")
    runs = planned_runs(spec, seed=3)
    assert runs == planned_runs(spec, seed=3) and runs != planned_runs(spec, seed=4)
    assert len(planned_runs(spec, max_runs=7, seed=3)) == 7
    exponents = np.log10([r["loss.lambda_g"] for r in runs])
    assert exponents.min() >= -6 and exponents.max() <= -2 and abs(exponents.mean() + 4) < 0.25
    assert {r["loss.beta"] for r in runs} == {0.5, 1.0, 2.0}
    assert {r["data.n_labeled"] for r in runs} == {10, 11, 12}             # inferred int_uniform
    lambda_c = [r["loss.lambda_c"] for r in runs]
    assert 0.1 <= min(lambda_c) and max(lambda_c) <= 0.3 and abs(np.mean(lambda_c) - 0.2) < 0.02


def test_bad_sweep_files_are_rejected_before_any_run(tmp_path):
    calls = []
    runner = lambda argv, log: calls.append(argv) or 0   # noqa: E731
    cases = {
        "loss.lamda_c": r"parameter 'loss.lamda_c': unknown config key 'loss.lamda_c'.*loss.lambda_c",
        "optimm.lr": r"parameter 'optimm.lr': unknown config key.*optim",
    }
    for name, message in cases.items():
        path = write_sweep(tmp_path, GRID.replace("data.n_labeled", name))
        with pytest.raises(ConfigError, match=message):
            sweep_command(str(path), preset="tiny", out=str(tmp_path / "out"), runner=runner)
    bad_value = write_sweep(tmp_path, GRID.replace("[10, 100]", "[10, many]"))
    with pytest.raises(ConfigError, match=r"'data.n_labeled'.*'many'.*int"):
        sweep_command(str(bad_value), preset="tiny", out=str(tmp_path / "out"), runner=runner)
    text_number = write_sweep(tmp_path, GRID.replace("{values: [0.1, 0.2, 0.4]}", "{min: 1e-5, max: 0.1}"))
    with pytest.raises(ConfigError, match="'min' is '1e-5', not a number"):
        sweep_command(str(text_number), preset="tiny", runner=runner)
    continuous_grid = write_sweep(tmp_path, GRID.replace("{values: [0.1, 0.2, 0.4]}", "{min: 0.1, max: 0.4}"))
    with pytest.raises(ConfigError, match="grid search needs 'values'"):
        sweep_command(str(continuous_grid), preset="tiny", runner=runner)
    with pytest.raises(ConfigError, match="unknown config key 'train.epochz'"):
        sweep_command(str(write_sweep(tmp_path, GRID)), overrides=["train.epochz=1"], preset="tiny", runner=runner)
    assert calls == [] and not (tmp_path / "out").exists()


def test_cli_reports_an_unknown_parameter_as_a_config_error(tmp_path, capsys):
    path = write_sweep(tmp_path, GRID.replace("data.n_labeled", "loss.lamda_c"))
    with pytest.raises(SystemExit, match=r"(?s)murauer-dist: .*unknown config key 'loss.lamda_c'"):
        cli_main(["sweep", str(path), "--preset", "tiny", "--out", str(tmp_path / "out"), "--max-runs", "1"])
    assert not (tmp_path / "out").exists()


def fake_train(failing_lambda_c: float | None = None, calls: list | None = None):
    """Stands in for `murauer-dist train`: parses its command line with the real config loader and
    logs a decreasing validation error (lower for lambda_c near 0.2) through the real RunLogger."""
    def run(argv: list[str], log_path: Path) -> int:
        assert argv[1:4] == ["-m", "murauer_dist.cli", "train"]
        cfg = load_config(argv[4], argv[5:])
        assert cfg.logging.wandb_mode == "offline" and cfg.logging.group == "grid-test"
        if calls is not None:
            calls.append(cfg.train.out)
        log_path.write_text("training\n")
        if cfg.loss.lambda_c == failing_lambda_c:
            return 3
        with RunLogger(cfg, cfg.train.out) as logger:
            for epoch in range(3):
                error = 10 + 100 * abs(cfg.loss.lambda_c - 0.2) + 1000 / cfg.data.n_labeled + 5 * (2 - epoch)
                logger.log(epoch, {"loss/total": 1.0, "val/mean_error_mm": error})
        return 0
    return run


def test_local_sweep_runs_each_combination_ranks_them_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    path, out = write_sweep(tmp_path, GRID), tmp_path / "out"
    calls = []
    with pytest.raises(UserError, match="2 of 6 runs failed"):
        sweep_command(str(path), preset="tiny", out=str(out), runner=fake_train(0.4, calls))
    assert len(calls) == 6 and sorted(Path(c).name for c in calls) == [f"run-{i:02d}" for i in range(6)]
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["runs"]
    assert summary["metric"] == {"name": "val/mean_error_mm", "goal": "minimize"}
    finished = [r for r in rows if r["status"] == "finished"]
    assert [(r["params"]["loss.lambda_c"], r["params"]["data.n_labeled"]) for r in finished] == \
        [(0.2, 100), (0.1, 100), (0.2, 10), (0.1, 10)]
    assert finished[0]["best"] == pytest.approx(20.0) and finished[0]["final"] == pytest.approx(20.0)
    assert [(r["status"], r["exit_code"]) for r in rows[4:]] == [("failed", 3), ("failed", 3)]
    table = (out / "summary.md").read_text()
    assert re.search(r"\| 1 \| run-04 \| 0.2 \| 100 \| 2 \| 20 \| 20 \| finished", table)
    assert "run-02: exit code 3" in table and "run-05: exit code 3" in table
    # Resume: finished runs are skipped, failed ones run again.
    calls.clear()
    sweep_command(str(path), preset="tiny", out=str(out), runner=fake_train(None, calls))
    assert sorted(Path(c).name for c in calls) == ["run-02", "run-05"]
    assert all(r["status"] == "finished" for r in json.loads((out / "summary.json").read_text())["runs"])
    # A changed sweep file does not silently mix with the old results.
    with pytest.raises(ConfigError, match="sweep file changed"):
        sweep_command(str(write_sweep(tmp_path, GRID.replace("0.1, ", "0.15, "))), preset="tiny",
                      out=str(out), runner=fake_train())
    assert json.loads((out / "run-00" / RESULT_FILE).read_text())["params"]["loss.lambda_c"] == 0.1


def test_shipped_sweep_files_are_valid():
    loss = load_sweep(REPO / "configs" / "sweeps" / "loss_weights.yaml", "nyu")
    assert set(loss.parameters) == {"loss.lambda_c", "loss.lambda_g", "loss.lambda_m", "loss.beta", "data.n_labeled"}
    assert loss.metric == "main/val_mean_error_mm" and loss.goal == "minimize"
    assert "${args_no_hyphens}" in loss.raw["command"] and loss.raw["program"] == "launch/torchrun.sh"
    assert len(planned_runs(loss)) == loss.run_cap > 0
    smoke = load_sweep(REPO / "configs" / "sweeps" / "smoke.yaml", "tiny")
    assert len(planned_runs(smoke)) == 2


@pytest.mark.slow
def test_smoke_sweep_end_to_end_with_the_real_train_command(tmp_path, monkeypatch):
    for module in ("murauer_dist.train.entry", "murauer_dist.frames.procedural.generate", "murauer_dist.shards.cli"):
        pytest.importorskip(module, reason=f"{module} (train, synth-data or make-shards) is not available")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    data = tmp_path / "data"
    cli = [sys.executable, "-m", "murauer_dist.cli"]
    import subprocess
    subprocess.run([*cli, "synth-data", str(data / "nyu"), "--frames-train", "96", "--frames-test", "16"],
                   check=True, cwd=REPO)
    subprocess.run([*cli, "make-shards", "--root", str(data / "nyu"), "--out", str(data / "shards"),
                    "--preset", "tiny"], check=True, cwd=REPO)
    out = tmp_path / "sweep"
    rows = sweep_command(str(REPO / "configs" / "sweeps" / "smoke.yaml"), preset="tiny", out=str(out),
                         overrides=[f"data.root={data / 'nyu'}", f"data.shards={data / 'shards'}"])
    assert [r["status"] for r in rows] == ["finished", "finished"], (out / "run-00" / "train.log").read_text()[-3000:]
    assert all(r["best"] is not None for r in rows)
    assert all(any((out / r["run"] / "wandb").glob("offline-run-*")) for r in rows)


DISTRIBUTION_SPECS = {
    "int_uniform": {"min": 2, "max": 9}, "uniform": {"min": -1.0, "max": 3.0},
    "q_uniform": {"min": 0.0, "max": 10.0, "q": 0.5}, "log_uniform": {"min": -3.0, "max": 1.0},
    "log_uniform_values": {"min": 1.0e-4, "max": 1.0}, "q_log_uniform": {"min": 0.0, "max": 5.0, "q": 2},
    "q_log_uniform_values": {"min": 1.0, "max": 100.0, "q": 5}, "inv_log_uniform": {"min": 0.0, "max": 3.0},
    "inv_log_uniform_values": {"min": 0.01, "max": 2.0}, "normal": {"mu": 1.0, "sigma": 2.0},
    "q_normal": {"mu": 0.0, "sigma": 5.0, "q": 1}, "log_normal": {"mu": 0.5, "sigma": 0.3},
    "q_log_normal": {"mu": 2.0, "sigma": 0.5, "q": 0.25}, "beta": {"a": 2.0, "b": 5.0},
    "categorical": {"values": ["a", "b", "c"]},
}


def test_random_draws_match_wandbs_engine_quantile_for_quantile():
    params = pytest.importorskip("sweeps.params", reason="wandb's sweep engine (the 'sweeps' extra) is not installed")
    from murauer_dist.sweep.expand import sample_value
    for kind, spec in DISTRIBUTION_SPECS.items():
        spec = {"distribution": kind, **spec}
        reference = params.HyperParameter("p", spec)
        for u in (0.03, 0.2, 0.5, 0.77, 0.96):
            expected = reference.ppf(u)
            expected = expected.item() if hasattr(expected, "item") else expected
            if isinstance(expected, str):
                assert sample_value(spec, u) == expected, (kind, u)
            else:
                assert sample_value(spec, u) == pytest.approx(expected, rel=1e-9), (kind, u)


BAYES = GRID.replace("method: grid", "method: bayes").replace("{values: [0.1, 0.2, 0.4]}", "{min: 0.01, max: 0.5}")


def test_bayes_without_the_engine_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sweeps", None)       # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"bayes.*pip install 'murauer_dist\[sweeps\]'"):
        sweep_command(str(write_sweep(tmp_path, BAYES)), preset="tiny", max_runs=2, out=str(tmp_path / "out"),
                      runner=fake_train())
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="bayes search never ends by itself"):
        sweep_command(str(write_sweep(tmp_path, BAYES)), preset="tiny", runner=fake_train())


def test_bayes_sweep_through_wandbs_engine_and_resume(tmp_path, monkeypatch):
    pytest.importorskip("sweeps", reason="wandb's sweep engine (the 'sweeps' extra) is not installed")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    path, out, calls = write_sweep(tmp_path, BAYES), tmp_path / "out", []
    rows = sweep_command(str(path), preset="tiny", max_runs=5, out=str(out), runner=fake_train(None, calls))
    assert len(calls) == 5 and all(0.01 <= r["params"]["loss.lambda_c"] <= 0.5 for r in rows)
    assert [r["best"] for r in rows] == sorted(r["best"] for r in rows)
    calls.clear()
    again = sweep_command(str(path), preset="tiny", max_runs=5, out=str(out), runner=fake_train(None, calls))
    assert calls == [] and again == rows
