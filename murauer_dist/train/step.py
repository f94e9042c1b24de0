"""One training step: named streams in, named loss terms out (docs/method.md §4).

    L = L_synth + beta L_real + lambda_c L_emb + lambda_g L_view + lambda_m L_adv

Which terms a method trains, with which weight, is its entry in murauer_dist/methods.py; each term
is one small function below (scalings as in the original code, train/losses.py). Order per step:
one model forward (one pass per stream, so BatchNorm batches are domain-pure), one discriminator
step on detached features, then the model loss (the adversarial term through the updated, frozen
discriminator) and the model step. Engine-agnostic: only the engine protocol of engine.py is used.
"""
from __future__ import annotations

import contextlib
import weakref
from typing import Callable

import torch

from murauer_dist import dist
from murauer_dist.methods import loss_weights, method_for
from murauer_dist.train import losses
from murauer_dist.train.undo import TensorSnapshot

# Synthetic halves with a pose target: (forward request, batch stream).
_SYNTH_HALVES = (("pairs_synth", "pairs"), ("synth", "synth"), ("views_synth", "views"))


def _image(tensor: torch.Tensor, cfg) -> torch.Tensor:
    return tensor.contiguous(memory_format=torch.channels_last) if cfg.model.channels_last else tensor


def model_requests(batch: dict, cfg, stage: str) -> dict[str, dict]:
    """One forward request per stream half the stage's method uses, in the original call order.

    Real halves go through m when the method maps (methods.py); synthetic ones never do. The view
    decoder runs only when the method trains L_view, the unlabeled passes keep a graph only when it
    trains L_adv; without L_adv they still run, for BatchNorm's running statistics (methods.py).
    """
    method = method_for(cfg.train.method, stage)
    drawn, mapped, requests = [s for s in method.streams if s in batch], method.mapped, {}
    views_cond, adversarial = "L_view" in method.terms, "L_adv" in method.terms
    if "pairs" in drawn:
        requests["pairs_real"] = {"depth": _image(batch["pairs"]["real_depth"], cfg), "mapped": mapped}
        if {"L_synth", "L_emb"} & method.terms.keys():       # real_only trains on the real half alone
            requests["pairs_synth"] = {"depth": _image(batch["pairs"]["synth_depth"], cfg), "mapped": False}
    if "synth" in drawn:
        requests["synth"] = {"depth": _image(batch["synth"]["depth"], cfg), "mapped": False}
    if "views" in drawn:
        views = batch["views"]
        requests["views_real"] = {"depth": _image(views["real_depth"], cfg), "mapped": mapped,
                                  "cond": views["real_cond"] if views_cond else None}
        requests["views_synth"] = {"depth": _image(views["synth_depth"], cfg), "mapped": False,
                                   "cond": views["synth_cond"] if views_cond else None}
    if "unlabeled_real" in drawn and "unlabeled_synth" in drawn:
        # f's output is detached: the adversarial gradient reaches the mapping only.
        requests["unlabeled_real"] = {"depth": _image(batch["unlabeled_real"]["depth"], cfg), "mapped": mapped,
                                      "pose": False, "detach_z": True, "grad": adversarial}
        requests["unlabeled_synth"] = {"depth": _image(batch["unlabeled_synth"]["depth"], cfg), "mapped": False,
                                       "pose": False, "grad": False}
    return requests


# ---- the loss terms: (model outputs, batch, cfg) -> a scalar, or None when its streams did not run ----

def _labeled_weights(out: dict, batch: dict) -> torch.Tensor | None:
    """0/1 weights of the labeled view-prediction frames; None when the views stream did not run.

    Weights, not a mask: indexing with a mask (or asking whether any frame is labeled) reads the
    mask back to the host, a device sync every step. A batch without labeled frames gives the
    weighted terms exactly 0 (the original produced NaN there).
    """
    if "views_real" not in out:
        return None
    return batch["views"]["labeled"].float()


def _sum(parts: list) -> torch.Tensor | None:
    return sum(parts) if parts else None


def loss_pretrain(out: dict, batch: dict, cfg) -> torch.Tensor:
    """Stage 1: pose MSE x batch size on synthetic crops."""
    return losses.pretrain_pose_loss(out["synth"]["pose"], batch["synth"]["target"])


def loss_synth(out: dict, batch: dict, cfg) -> torch.Tensor | None:
    """Pose SSE on every synthetic batch that ran (the pairs' twins, synth, the views' synthetic inputs)."""
    return _sum([losses.pose_sse(out[name]["pose"], batch[stream]["target"])
                 for name, stream in _SYNTH_HALVES if name in out])


def loss_real(out: dict, batch: dict, cfg) -> torch.Tensor | None:
    """Pose SSE on the labeled pairs, plus the labeled view frames as views-batch-size x MSE: the
    original's scaling, so the term does not depend on how many view frames happen to be labeled."""
    parts = []
    if "pairs_real" in out:
        parts.append(losses.pose_sse(out["pairs_real"]["pose"], batch["pairs"]["target"]))
    weights = _labeled_weights(out, batch)
    if weights is not None:
        views_size = float(weights.shape[0])
        parts.append(losses.weighted_scaled_mse(out["views_real"]["pose"], batch["views"]["target"], weights,
                                                views_size))
    return _sum(parts)


def loss_emb(out: dict, batch: dict, cfg) -> torch.Tensor | None:
    """Feature matching ||m(f(x_r)) - sg(f(x_s))||^2 of labeled twins: SSE on the pairs, plus the
    labeled view frames as pairs-batch-size x MSE.

    Why the pairs batch size: the original code does exactly this (poier/murauer,
    hapetrainer_map_preview_adversarial.py: `loss_emb_prev = mse(...) * embedding_target.size(0)
    # same weight as orig. embedding loss`, where embedding_target is the pairs' synthetic features).
    The MSE makes the part independent of how many view frames are labeled in this batch, and the
    factor gives it the batch count of the pairs term. The MSE also averages over the feature
    dimensions, which the pairs' SSE sums, so per frame it weighs 1/embed_dim of a pair; kept as
    is, because the published results were trained with it (a reweighting would be a new method
    setting, not a fix).
    """
    parts = []
    if "pairs_real" in out and "pairs_synth" in out:
        parts.append(losses.feature_matching_sse(out["pairs_real"]["emb"], out["pairs_synth"]["emb"]))
    weights = _labeled_weights(out, batch)
    if weights is not None:
        pairs_size = float(batch["pairs"]["target"].shape[0]) if "pairs" in batch else float(cfg.loader.pairs)
        parts.append(losses.weighted_scaled_mse(out["views_real"]["emb"], out["views_synth"]["emb"].detach(),
                                                weights, pairs_size))
    return _sum(parts)


def loss_view(out: dict, batch: dict, cfg) -> torch.Tensor | None:
    """L1 of the predicted other view, real and synthetic inputs."""
    if "views_real" not in out or "view" not in out["views_real"]:
        return None
    views = batch["views"]
    return (losses.view_l1(out["views_real"]["view"], views["real_view"])
            + losses.view_l1(out["views_synth"]["view"], views["synth_view"]))


def loss_adv(disc, out: dict) -> torch.Tensor:
    """SSE(h(m(sg f(x_r))), 0) through the bare, frozen discriminator (works for DDP and DeepSpeed)."""
    module = disc.module
    module.requires_grad_(False)
    try:
        scores = module(out["unlabeled_real"]["emb"].float())
    finally:
        module.requires_grad_(True)
    return losses.lsgan_sse(scores, 0.0)


# The terms computed from the forward outputs, in the order they are summed; L_adv comes after D's step.
TERMS = {"L_pretrain": loss_pretrain, "L_synth": loss_synth, "L_real": loss_real, "L_emb": loss_emb,
         "L_view": loss_view}


def discriminator_step(disc, out: dict, device) -> dict[str, torch.Tensor]:
    """LSGAN D update: mapped real features -> 1, synthetic features -> 0 (both detached).

    An engine that can take a step back (engine.py, can_undo_step) steps at once: whether the step
    is kept is decided at the end of train_step, with the model's, in the step's one host sync. A
    DeepSpeed engine cannot (its optimizer state is partitioned and not cheap to copy), so there the
    ranks agree on D's loss being finite before it steps: a second sync, in DeepSpeed runs only.
    """
    real = out["unlabeled_real"]["emb"].detach().float()
    synth = out["unlabeled_synth"]["emb"].detach().float()
    scores = disc(torch.cat([real, synth]))       # no BatchNorm in D: one call equals two
    d_real, d_synth = scores[:real.shape[0]], scores[real.shape[0]:]
    loss = losses.lsgan_sse(d_real, 1.0) + losses.lsgan_sse(d_synth, 0.0)
    stats = {"L_disc": loss.detach(), "d_real_mean": d_real.detach().mean(), "d_synth_mean": d_synth.detach().mean()}
    if disc.can_undo_step:
        disc.save_for_undo()
        stepped = True
    else:
        stepped = dist.all_true(torch.isfinite(loss), device)
    if stepped:
        disc.backward(loss)
        disc.step()
    return {**stats, "disc_stepped": stepped}


def _autocast(cfg, device: torch.device):
    if cfg.train.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# The BatchNorm running statistics of each model engine, copied before its forward passes so that a
# skipped step can put them back (one multi-tensor copy; undo.py). Made with the engine's first step:
# an engine lives for one stage, and its module's buffers do not change within it.
_BUFFER_SNAPSHOTS: "weakref.WeakKeyDictionary[object, TensorSnapshot]" = weakref.WeakKeyDictionary()


def _buffer_snapshot(engine) -> TensorSnapshot:
    if engine not in _BUFFER_SNAPSHOTS:
        _BUFFER_SNAPSHOTS[engine] = TensorSnapshot(list(engine.module.buffers()))
    return _BUFFER_SNAPSHOTS[engine]


def _no_phase(phase: str) -> None:
    pass


def train_step(engines: dict, batch: dict, cfg, stage: str = "main",
               on_phase: Callable[[str], None] | None = None, stop_requested: bool = False) -> dict:
    """One optimisation step. engines = {"model": engine, "disc": engine} (engine.py protocol).

    Returns the named loss terms (absent terms are left out), the weighted L_total and the
    discriminator diagnostics as 0-dim tensors on the training device, never read here: reading one
    is a device sync, so the loop reads them once per train.log_every steps (step_floats). Python
    values: `skipped` = 1.0 when a loss was not finite on some rank (nothing was updated: the model
    did not step, D's step and the BatchNorm statistics were put back), `disc_skipped`, and `stop` =
    whether some rank asked to stop (`stop_requested`, its SIGTERM flag). On DeepSpeed, where D's
    step cannot be taken back, D keeps a step it took with a finite loss when the model's is not.

    The step's one host sync is the agreement of all ranks on those two flags (dist.agree): one
    all-reduce, one read-back. on_phase(name) is called as each phase ends ("forward", "disc",
    "forward" again for the loss, "backward"): the benchmark's phase timer hooks in there.
    """
    model, disc, on_phase = engines["model"], engines["disc"], on_phase or _no_phase
    weights = loss_weights(cfg.train.method, stage, cfg.loss)        # {"L_synth": 1, "L_real": beta, ...}
    device = next(model.module.parameters()).device
    buffers = _buffer_snapshot(model)
    buffers.take()
    with _autocast(cfg, device):
        out = model(model_requests(batch, cfg, stage))
        terms = {name: term(out, batch, cfg) for name, term in TERMS.items() if name in weights}
        on_phase("forward")
        disc_stats = {}
        if "L_adv" in weights and "unlabeled_real" in out:
            disc_stats = discriminator_step(disc, out, device)      # D first, on detached features
            on_phase("disc")
            terms["L_adv"] = loss_adv(disc, out)                     # then m against the updated D
        terms = {name: value for name, value in terms.items() if value is not None}
        total = sum(weights[name] * value for name, value in terms.items())
    # D's loss too: a NaN in the unlabeled synthetic crops reaches neither L_total nor the model's
    # gradient, but it does reach the BatchNorm running statistics, which the skip puts back.
    checks = [torch.isfinite(total)] + ([torch.isfinite(disc_stats["L_disc"])] if disc_stats else [])
    finite, stop = dist.agree(torch.stack(checks).all(), stop_requested)
    on_phase("forward")
    if finite:
        model.backward(total)
        model.step()
    else:       # no backward ran, so there are no gradients to clear
        buffers.restore()
        if disc_stats.get("disc_stepped") and disc.can_undo_step:
            disc.undo_step()
    on_phase("backward")
    return _report(terms, total, disc_stats, finite, stop, batch, stage)


def _report(terms: dict, total: torch.Tensor, disc_stats: dict, finite: bool, stop: bool, batch: dict,
            stage: str) -> dict:
    result = {**{name: value.detach() for name, value in terms.items()}, "L_total": total.detach()}
    if disc_stats:
        stepped = disc_stats.pop("disc_stepped") and finite
        result.update(disc_stats)
        result["disc_skipped"] = 0.0 if stepped else 1.0
    if "views" in batch and stage != "pretrain":
        result["labeled_views"] = batch["views"]["labeled"].sum()
    result["skipped"] = 0.0 if finite else 1.0
    result["stop"] = stop
    return result


def step_floats(result: dict) -> dict[str, float]:
    """train_step's result with every value a float (one device sync for all tensors)."""
    tensors = {name: value for name, value in result.items() if isinstance(value, torch.Tensor)}
    read = torch.stack([value.detach().float().reshape(()) for value in tensors.values()]).tolist() if tensors else []
    return {name: float(value) for name, value in result.items() if name not in tensors} | dict(zip(tensors, read))
