"""One training step: named streams in, named loss terms out (docs/method.md §4).

Order per step: one model forward (one pass per stream, so BatchNorm batches are domain-pure),
then one discriminator step on detached features, then the model loss (the adversarial term
through the updated, frozen discriminator) and the model update. Engine-agnostic: it only uses
the engine protocol of engine.py.
"""
from __future__ import annotations

import contextlib
import time

import torch

from murauer_dist import dist
from murauer_dist.train import losses

TERMS = ("L_synth", "L_real", "L_emb", "L_view", "L_adv")


def _image(tensor: torch.Tensor, cfg) -> torch.Tensor:
    return tensor.contiguous(memory_format=torch.channels_last) if cfg.model.channels_last else tensor


def model_requests(batch: dict, cfg, stage: str) -> dict[str, dict]:
    """One forward request per stream half, in the original call order."""
    if stage == "pretrain":
        return {"synth": {"depth": _image(batch["synth"]["depth"], cfg), "mapped": False}}
    method, requests = cfg.train.method, {}
    if "pairs" in batch:
        requests["pairs_real"] = {"depth": _image(batch["pairs"]["real_depth"], cfg), "mapped": True}
        if method != "real_only":
            requests["pairs_synth"] = {"depth": _image(batch["pairs"]["synth_depth"], cfg), "mapped": False}
    if "synth" in batch:
        requests["synth"] = {"depth": _image(batch["synth"]["depth"], cfg), "mapped": False}
    if "views" in batch:
        views = batch["views"]
        requests["views_real"] = {"depth": _image(views["real_depth"], cfg), "mapped": True, "cond": views["real_cond"]}
        requests["views_synth"] = {"depth": _image(views["synth_depth"], cfg), "mapped": False,
                                   "cond": views["synth_cond"]}
    if "unlabeled_real" in batch and "unlabeled_synth" in batch:
        # f's output is detached: the adversarial gradient reaches the mapping only.
        requests["unlabeled_real"] = {"depth": _image(batch["unlabeled_real"]["depth"], cfg), "mapped": True,
                                      "pose": False, "detach_z": True}
        requests["unlabeled_synth"] = {"depth": _image(batch["unlabeled_synth"]["depth"], cfg), "mapped": False,
                                       "pose": False, "grad": False}
    return requests


def pose_terms(out: dict, batch: dict, cfg) -> dict[str, torch.Tensor]:
    """L_synth, L_real and L_emb from whatever streams were run."""
    terms = {}
    synth_parts = [losses.pose_sse(out[name]["pose"], batch[stream]["target"])
                   for name, stream in (("pairs_synth", "pairs"), ("synth", "synth"), ("views_synth", "views"))
                   if name in out]
    if synth_parts:
        terms["L_synth"] = sum(synth_parts)
    labeled = batch["views"]["labeled"].bool() if "views_real" in out else None
    real_parts, emb_parts = [], []
    if "pairs_real" in out:
        real_parts.append(losses.pose_sse(out["pairs_real"]["pose"], batch["pairs"]["target"]))
        if "pairs_synth" in out:
            emb_parts.append(losses.feature_matching_sse(out["pairs_real"]["emb"], out["pairs_synth"]["emb"]))
    if labeled is not None and bool(labeled.any()):      # skip, not NaN, when no view frame is labeled
        views_size = float(labeled.shape[0])
        pairs_size = float(batch["pairs"]["target"].shape[0]) if "pairs" in batch else float(cfg.loader.pairs)
        real_parts.append(losses.scaled_mse(out["views_real"]["pose"][labeled], batch["views"]["target"][labeled],
                                            views_size))
        emb_parts.append(losses.scaled_mse(out["views_real"]["emb"][labeled],
                                           out["views_synth"]["emb"][labeled].detach(), pairs_size))
    if real_parts:
        terms["L_real"] = sum(real_parts)
    if emb_parts:
        terms["L_emb"] = sum(emb_parts)
    return terms


def view_term(out: dict, batch: dict) -> dict[str, torch.Tensor]:
    if "views_real" not in out:
        return {}
    views = batch["views"]
    return {"L_view": losses.view_l1(out["views_real"]["view"], views["real_view"])
            + losses.view_l1(out["views_synth"]["view"], views["synth_view"])}


def weighted_total(terms: dict[str, torch.Tensor], cfg) -> torch.Tensor:
    weights = {"L_synth": 1.0, "L_real": cfg.loss.beta, "L_emb": cfg.loss.lambda_c,
               "L_view": cfg.loss.lambda_g, "L_adv": cfg.loss.lambda_m, "L_pretrain": 1.0}
    return sum(weights[name] * value for name, value in terms.items())


def discriminator_step(disc, out: dict, device) -> dict[str, torch.Tensor]:
    """LSGAN D update: mapped real features -> 1, synthetic features -> 0 (both detached)."""
    real = out["unlabeled_real"]["emb"].detach().float()
    synth = out["unlabeled_synth"]["emb"].detach().float()
    scores = disc(torch.cat([real, synth]))       # no BatchNorm in D: one call equals two
    d_real, d_synth = scores[:real.shape[0]], scores[real.shape[0]:]
    loss = losses.lsgan_sse(d_real, 1.0) + losses.lsgan_sse(d_synth, 0.0)
    stepped = dist.all_true(torch.isfinite(loss).all(), device)
    if stepped:
        disc.backward(loss)
        disc.step()
    return {"L_disc": loss.detach(), "d_real_mean": d_real.detach().mean(), "d_synth_mean": d_synth.detach().mean(),
            "disc_skipped": torch.tensor(0.0 if stepped else 1.0)}


def adversarial_term(disc, out: dict) -> dict[str, torch.Tensor]:
    """SSE(h(m(sg f(x_r))), 0) through the bare, frozen discriminator (works for DDP and DeepSpeed)."""
    module = disc.module
    module.requires_grad_(False)
    try:
        scores = module(out["unlabeled_real"]["emb"].float())
    finally:
        module.requires_grad_(True)
    return {"L_adv": losses.lsgan_sse(scores, 0.0)}


class _Clock:
    """Phase timer (synchronising CUDA so GPU work lands in its phase); inactive without a dict."""

    def __init__(self, timings: dict | None, device: torch.device):
        self.timings, self.device = timings, device
        self.last = self._now() if timings is not None else 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def lap(self, phase: str) -> None:
        if self.timings is not None:
            now = self._now()
            self.timings[phase] = self.timings.get(phase, 0.0) + now - self.last
            self.last = now


def _autocast(cfg, device: torch.device):
    if cfg.train.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _snapshot_buffers(module: torch.nn.Module) -> list[torch.Tensor]:
    """BatchNorm statistics before the forward, restored if the step is skipped (non-finite)."""
    return [buffer.detach().clone() for buffer in module.buffers()]


def _restore_buffers(module: torch.nn.Module, saved: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for buffer, value in zip(module.buffers(), saved):
            buffer.copy_(value)


def train_step(parts: dict, batch: dict, cfg, stage: str = "main", timings: dict | None = None) -> dict[str, float]:
    """One optimisation step. parts = {"model": engine, "disc": engine} (engine.py protocol).

    Returns the named loss terms as floats (absent terms are left out), the weighted L_total,
    discriminator diagnostics, and `skipped` = 1.0 when the loss was not finite on some rank (no
    update, BatchNorm statistics restored).
    """
    model, disc = parts["model"], parts["disc"]
    device = next(model.module.parameters()).device
    clock = _Clock(timings, device)
    saved_buffers = _snapshot_buffers(model.module)
    with _autocast(cfg, device):
        out = model(model_requests(batch, cfg, stage))
        if stage == "pretrain":
            terms = {"L_pretrain": losses.pretrain_pose_loss(out["synth"]["pose"], batch["synth"]["target"])}
        else:
            terms = {**pose_terms(out, batch, cfg), **view_term(out, batch)}
        clock.lap("forward")
        disc_stats = {}
        if "unlabeled_real" in out:
            disc_stats = discriminator_step(disc, out, device)
            clock.lap("disc")
            terms.update(adversarial_term(disc, out))
        total = weighted_total(terms, cfg)
    finite = dist.all_true(torch.isfinite(total), device)
    clock.lap("forward")
    if finite:
        model.backward(total)
        model.step()
    else:       # no backward ran, so there are no gradients to clear
        _restore_buffers(model.module, saved_buffers)
    clock.lap("backward")
    named = {**terms, "L_total": total.detach(), **disc_stats}
    values = torch.stack([value.detach().float().reshape(()) for value in named.values()]).tolist()
    result = dict(zip(named.keys(), values))
    result["skipped"] = 0.0 if finite else 1.0
    if "views" in batch and stage != "pretrain":
        result["labeled_views"] = float(batch["views"]["labeled"].sum())
    return result
