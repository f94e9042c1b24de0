"""The training methods, one entry each: what a method draws, which loss terms it weighs how, and
whether real images go through the mapping m (README "Training", docs/method.md).

The table drives everything that differs between methods: the config's choices for train.method,
the batch streams (data/batch.py stream_sizes), the forward requests and the loss of a training
step (train/step.py), the path of validation and evaluation (uses_mapping) and the labels of
tables and plots (experiment.py). Adding a method is one entry here plus a preset in configs/.

A term's weight is a number or the name of the cfg.loss field that holds it, so for MURAUER
    L = L_synth + beta L_real + lambda_c L_emb + lambda_g L_view + lambda_m L_adv.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str                       # the value of train.method
    label: str                      # in tables and plots
    streams: tuple[str, ...]        # the batch streams it draws (data/batch.py STREAMS)
    terms: dict                     # loss term -> weight: a number or a cfg.loss field name
    mapped: bool                    # real images pass f -> m -> p, in training and at evaluation


# Stage 1 of every method: f and p on synthetic data (the mapping is never trained there).
PRETRAIN = Method("pretrain", "Synthetic pre-training", streams=("synth",), terms={"L_pretrain": 1.0}, mapped=False)

METHODS = {method.name: method for method in (
    Method("murauer", "MURAUER (full)",
           streams=("pairs", "synth", "views", "unlabeled_real", "unlabeled_synth"),
           terms={"L_synth": 1.0, "L_real": "beta", "L_emb": "lambda_c", "L_view": "lambda_g", "L_adv": "lambda_m"},
           mapped=True),
    # labeled real + synthetic: no unlabeled data, no view prediction, no adversarial term
    Method("real_synth", "Real & Synth (baseline)", streams=("pairs", "synth"),
           terms={"L_synth": 1.0, "L_real": "beta", "L_emb": "lambda_c"}, mapped=True),
    Method("synth_only", "Synth only", streams=("synth",), terms={"L_synth": 1.0}, mapped=False),
    # only the real half of each pair is used
    Method("real_only", "Real only", streams=("pairs",), terms={"L_real": "beta"}, mapped=True),
)}

STAGES = ("pretrain", "main")


def method_for(method: str, stage: str) -> Method:
    """The entry that trains `stage`: PRETRAIN in stage 1, the method named `method` in stage 2."""
    if stage not in STAGES:
        raise ValueError(f"stage must be 'pretrain' or 'main', got {stage!r}")
    if method not in METHODS:
        raise ValueError(f"unknown training method {method!r}; known: {', '.join(METHODS)}")
    return PRETRAIN if stage == "pretrain" else METHODS[method]


def uses_mapping(method: str, stage: str) -> bool:
    """Whether a model trained up to `stage` with `method` runs real images through m."""
    return method_for(method, stage).mapped


def loss_weights(method: str, stage: str, loss_cfg) -> dict[str, float]:
    """{term: weight} of the terms `method` trains in `stage`, weights read from cfg.loss."""
    return {term: float(getattr(loss_cfg, weight)) if isinstance(weight, str) else float(weight)
            for term, weight in method_for(method, stage).terms.items()}
