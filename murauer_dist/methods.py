"""The training methods, one entry each: what a method draws, which loss terms it weighs how, and
whether real images go through the mapping m (README "Training", docs/method.md).

The table drives everything that differs between methods: the config's choices for train.method,
the batch streams (batches/batch.py stream_sizes), the forward requests and the loss of a training
step (train/step.py), the path of validation and evaluation (uses_mapping) and the labels of
tables and plots (experiment.py). Adding a method is one entry here plus a preset in configs/.

A term's weight is a number or the name of the cfg.loss field that holds it, so for MURAUER
    L = L_synth + beta L_real + lambda_c L_emb + lambda_g L_view + lambda_m L_adv.

The paper's baseline and ablations (docs/method.md §6.2, Fig. 4) are MURAUER with terms switched off,
as the released code runs them (one trainer; the weights of the switched-off terms set to 0): the
same five streams, the same steps and stage 1, only fewer terms. A term left out of `terms` is
exactly a weight of 0 (it adds nothing to the loss and no gradient).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str                       # the value of train.method
    label: str                      # in tables and plots
    streams: tuple[str, ...]        # the batch streams it draws (batches/batch.py STREAMS)
    terms: dict                     # loss term -> weight: a number or a cfg.loss field name
    mapped: bool                    # real images pass f -> m -> p, in training and at evaluation
    short: str = ""                 # where space is short (plot ticks); "" means the label


# Stage 1 of every method: f and p on synthetic data (the mapping is never trained there).
PRETRAIN = Method("pretrain", "Synthetic pre-training", streams=("synth",), terms={"L_pretrain": 1.0}, mapped=False)

# What every MURAUER-family method draws each stage-2 step (docs/method.md §5.4).
FIVE_STREAMS = ("pairs", "synth", "views", "unlabeled_real", "unlabeled_synth")
# The labeled terms every MURAUER-family method keeps: the labeled pairs, the synthetic crops and the
# labeled frames of the views stream (L_real and L_emb take those; L_synth all its synthetic inputs).
_LABELED_TERMS = {"L_synth": 1.0, "L_real": "beta", "L_emb": "lambda_c"}

# Why the baseline and the ablations draw all five streams, although the unlabeled streams feed no term
# of theirs (real_synth, view_only) and the views stream feeds L_view only where it is kept:
# - the views stream is not unlabeled data only: its labeled frames (about 3 of 11 at small n) add to
#   L_real and L_emb, and its synthetic inputs to L_synth, in the released code's baseline too;
# - every stream is its own forward pass in training mode, so an undrawn stream leaves the other
#   streams' batch statistics (and so the gradients) unchanged, but NOT the BatchNorm running
#   statistics that evaluation uses: they are an exponential average over every training-mode pass,
#   and the two unlabeled passes are the last two of each step (the most weight). Leaving them out
#   would make the test-time normalisation of the baseline differ from MURAUER's for a reason that
#   is not a loss term (tests/test_protocol.py checks the running statistics agree).
# So the unlabeled streams run forward (no discriminator step, no loss) and only the view decoder is
# skipped where L_view is off (it has its own BatchNorm, which the pose path never uses).
METHODS = {method.name: method for method in (
    Method("murauer", "MURAUER (full)", streams=FIVE_STREAMS,
           terms={**_LABELED_TERMS, "L_view": "lambda_g", "L_adv": "lambda_m"}, mapped=True,
           short="MURAUER"),
    # the paper's "Real & Synth": lambda_g = lambda_m = 0
    Method("real_synth", "Real & Synth (baseline)", streams=FIVE_STREAMS, terms=dict(_LABELED_TERMS), mapped=True,
           short="Real & Synth"),
    # the paper's ablations: "Real & Synth + distribution matching only" (lambda_g = 0) and
    # "Real & Synth + view prediction only" (lambda_m = 0)
    Method("dm_only", "Real & Synth + distribution matching only", streams=FIVE_STREAMS,
           terms={**_LABELED_TERMS, "L_adv": "lambda_m"}, mapped=True, short="+ dist. match."),
    Method("view_only", "Real & Synth + view prediction only", streams=FIVE_STREAMS,
           terms={**_LABELED_TERMS, "L_view": "lambda_g"}, mapped=True, short="+ view pred."),
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


def leaves_parameters_unused(method: str, stage: str, released_affine_blocks: bool = False) -> bool:
    """Whether a step of `stage` leaves some parameter of the pose model without a gradient: m when
    real images do not pass it, g when L_view is off, fc1 of the released affine blocks always (DDP
    must then look for unused parameters after each forward, which costs a graph walk per step)."""
    entry = method_for(method, stage)
    return released_affine_blocks or not entry.mapped or "L_view" not in entry.terms


def loss_weights(method: str, stage: str, loss_cfg) -> dict[str, float]:
    """{term: weight} of the terms `method` trains in `stage`, weights read from cfg.loss."""
    return {term: float(getattr(loss_cfg, weight)) if isinstance(weight, str) else float(weight)
            for term, weight in method_for(method, stage).terms.items()}


# The stream each loss term cannot be trained without (a batch size of 0 there would make the term
# silently 0). L_synth also takes the synthetic halves of the pairs and views, so it needs the synth
# stream only where the method draws no pairs.
TERM_STREAMS = {
    "L_real": ("pairs",),
    "L_view": ("views",),
    "L_adv": ("unlabeled_real", "unlabeled_synth"),
}


def required_streams(method: str) -> dict[str, str]:
    """{stream: term it feeds} of the stage-2 streams `method` cannot train without."""
    entry = method_for(method, "main")
    required = {stream: term for term in entry.terms for stream in TERM_STREAMS.get(term, ())}
    if "L_synth" in entry.terms and "pairs" not in entry.streams:
        required["synth"] = "L_synth"
    return required


# What reads synthetic crops: these streams, and the pairs' synthetic halves where a term takes them.
SYNTHETIC_STREAMS = ("synth", "views", "unlabeled_synth")
SYNTHETIC_TERMS = ("L_synth", "L_emb")


def synthetic_needs(method: str) -> str:
    """Why stage 2 of `method` needs synthetic data (its streams and terms that read it), or "" (real_only):
    a dataset without synthetic twins (spec `synthetic: false`) trains only the latter."""
    entry = method_for(method, "main")
    parts = [f"stream {s}" for s in entry.streams if s in SYNTHETIC_STREAMS]
    parts += [f"term {t}" for t in entry.terms if t in SYNTHETIC_TERMS]
    return ", ".join(parts)
