"""`murauer-dist import-original FILE.mdl OUT.pt`: a model file of the original MURAUER code as a
checkpoint of this project.

The original code (Python 2, torch 0.4) builds f, m, p and g as one network (`ResNet_Map_PreView`,
docs/method.md §3) and saves `model.state_dict()` with torch.save; its released models
(`model_full_n73k.mdl`, the synthetic-only `model_synth_only.mdl_pretrain`, ...) are such files. This
module renames every parameter and buffer to ours and checks every shape; the network structure is
the same, so nothing is converted. Names (original -> ours; `*` = weight, bias, running_mean,
running_var, num_batches_tracked as the layer has them):

    conv1.*                              encoder.conv1.*
    layer{s}.{b}.{conv,bn}{1,2,3}.*      encoder.stages.{s-1}.{b}.{conv,bn}{1,2,3}.*
    layer{s}.{b}.downsample.{0,1}.*      encoder.stages.{s-1}.{b}.project.{0,1}.*
    bn_res.*                             encoder.bn_out.*
    fc1.*                                encoder.fc.*                 (feature z)
    mappinglayer.{k}.fc{1,2}.*           mapping.blocks.{k}.fc{1,2}.*
    fc2.*                                pose_head.fc_hidden.*        (h, read by the view decoder)
    fc3_h0.*                             pose_head.fc_pose.*
    fc3_h1.*                             (dropped: the original's unused second output layer)
    preview.convt{i}.weight              view_decoder.net.<i-th ConvTranspose2d>.weight
    preview.bn{i}_d.*                    view_decoder.net.<i-th BatchNorm2d>.*

The released mapping blocks compute fc2(x) + x (affine, docs/method.md §3.2), so the produced
checkpoint's config sets `model.released_affine_blocks=true`; its other settings come from a preset
(`nyu` by default: 128x128 crops, the full-size network, the NYU cube protocol).

Accepted files: a state dict (an OrderedDict of tensors, as the original saves it), possibly with the
`module.` prefix of DataParallel, or a dict holding one under `state_dict`, `model_state_dict`,
`model` or `net`. Refused, with one line naming the file: anything torch.load cannot read (not a torch
file, truncated), a pickled whole model or any other pickled Python object (torch.load runs with
weights_only=True and never executes code from the file: load it in the original code and save
`model.state_dict()` instead), a dict without a state dict, and a state dict whose names or shapes do
not match the preset's network (missing, unexpected and mismatched names listed).
"""
from __future__ import annotations

import hashlib
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from murauer_dist.atomic import atomic_open
from murauer_dist.config import load_config, public_dict
from murauer_dist.errors import UserError
from murauer_dist.methods import METHODS, uses_mapping
from murauer_dist.models import build_model
from murauer_dist.paths import output_file, what_is
from murauer_dist.train.checkpoint import describe_non_finite, non_finite_tensors, plain

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
DROPPED = {"fc3_h1.weight", "fc3_h1.bias"}      # the original's second, unused pose output layer
OPTIONAL_SUFFIX = "num_batches_tracked"         # torch < 0.4.1 files do not have it: left at 0
SHOWN = 4                                        # names listed per kind of problem


class ImportOriginalError(UserError):
    """A file that is not a model of the original MURAUER code (or not one for this preset)."""


_STATIC = [(r"encoder\.conv1\.", "conv1."), (r"encoder\.bn_out\.", "bn_res."), (r"encoder\.fc\.", "fc1."),
           (r"mapping\.blocks\.(\d+)\.", r"mappinglayer.\1."), (r"pose_head\.fc_hidden\.", "fc2."),
           (r"pose_head\.fc_pose\.", "fc3_h0.")]
_STAGE = re.compile(r"encoder\.stages\.(\d+)\.(\d+)\.(.*)$")


def original_names(model: nn.Module) -> dict[str, str]:
    """{our state-dict name: the original code's name} for every entry of `model`'s state dict."""
    decoder_index = {}
    convs = [i for i, layer in enumerate(model.view_decoder.net) if isinstance(layer, nn.ConvTranspose2d)]
    norms = [i for i, layer in enumerate(model.view_decoder.net) if isinstance(layer, nn.BatchNorm2d)]
    decoder_index.update({index: f"preview.convt{n + 1}" for n, index in enumerate(convs)})
    decoder_index.update({index: f"preview.bn{n + 1}_d" for n, index in enumerate(norms)})
    names = {}
    for ours in model.state_dict():
        names[ours] = _original_name(ours, decoder_index)
    return names


def _original_name(ours: str, decoder_index: dict[int, str]) -> str:
    stage = _STAGE.match(ours)
    if stage:
        rest = stage.group(3).replace("project.", "downsample.", 1) if stage.group(3).startswith("project.") \
            else stage.group(3)
        return f"layer{int(stage.group(1)) + 1}.{stage.group(2)}.{rest}"
    decoder = re.match(r"view_decoder\.net\.(\d+)\.(.*)$", ours)
    if decoder:
        return f"{decoder_index[int(decoder.group(1))]}.{decoder.group(2)}"
    for pattern, replacement in _STATIC:
        if re.match(pattern, ours):
            return re.sub(pattern, replacement, ours, count=1)
    raise ValueError(f"no original name for {ours}")


def _brief(names, shown: int = SHOWN) -> str:
    names = sorted(names)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The original-layout state dict in FILE (see the module docstring for what is accepted)."""
    path = Path(path)
    if not path.is_file():
        raise ImportOriginalError(f"import-original: {path} {what_is(path)}; give the .mdl file of the original code")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if not found:                                      # not a pickle of tensors at all (text, other data)
            raise ImportOriginalError(f"import-original: {path} is not a torch file torch.load can read (it "
                                      f"{what_is(path)}); pass the .mdl file of the original code") from None
        what = f" ({found.group(1)})"
        raise ImportOriginalError(
            f"import-original: {path} holds pickled Python objects{what}, not only tensors (a whole pickled model?); "
            "it is not loaded because that would run code from the file: in the original code, save "
            "model.state_dict() with torch.save and import that file") from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, TypeError, AttributeError,
            UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise ImportOriginalError(f"import-original: {path} is not a torch file torch.load can read (it "
                                  f"{what_is(path)}; {type(err).__name__}: {first}); pass the .mdl file of the original "
                                  f"code") from None
    state = _unwrap(loaded)
    if state is None:
        keys = _brief(str(key) for key in loaded) if isinstance(loaded, dict) else type(loaded).__name__
        raise ImportOriginalError(f"import-original: {path} holds no state dict of tensors (found: {keys}); pass the "
                                  "model file the original code saves with torch.save(model.state_dict(), ...)")
    if state and all(key.startswith("module.") for key in state):        # saved from a DataParallel
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def _is_state_dict(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(key, str) and isinstance(item, torch.Tensor) for key, item in value.items())


def _unwrap(loaded):
    if _is_state_dict(loaded):
        return dict(loaded)
    if isinstance(loaded, dict):
        for key in WRAPPER_KEYS:
            if _is_state_dict(loaded.get(key)):
                return dict(loaded[key])
    return None


def convert(state: dict[str, torch.Tensor], model: nn.Module, source: str = "the file") -> dict[str, torch.Tensor]:
    """Our state dict for `model` from an original-layout `state`; ImportOriginalError lists what does not fit."""
    names = original_names(model)
    ours_state = model.state_dict()
    expected = set(names.values())
    given = set(state)
    missing = sorted(name for name in expected - given if not name.endswith(OPTIONAL_SUFFIX))
    unexpected = sorted(given - expected - DROPPED)
    mismatched = []
    for ours, original in names.items():
        if original in state and tuple(state[original].shape) != tuple(ours_state[ours].shape):
            mismatched.append(f"{original} {tuple(state[original].shape)} (this preset: "
                              f"{tuple(ours_state[ours].shape)})")
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing ({_brief(missing)})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected ({_brief(unexpected)})")
        if mismatched:
            problems.append(f"{len(mismatched)} of another shape ({_brief(mismatched, 3)})")
        hint = ("not a model of the original MURAUER code (its ResNet_Map_PreView state dict)"
                if len(missing) > len(expected) // 2 else
                "the file does not fit the preset's network (another size or depth?): pass --preset or key=value "
                "overrides (model.*, data.crop_size) that match it")
        raise ImportOriginalError(f"import-original: {source}: {'; '.join(problems)}: {hint}")
    converted = {}
    for ours, original in names.items():
        if original in state:
            converted[ours] = state[original].detach().clone().to(ours_state[ours].dtype).contiguous()
        else:                                                    # num_batches_tracked of a torch < 0.4.1 file
            converted[ours] = torch.zeros_like(ours_state[ours])
    return converted


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_original(source: str | Path, out: str | Path, preset: str = "nyu", overrides=(),
                    method: str = "murauer") -> dict:
    """Convert FILE into the checkpoint OUT (model weights + config); returns a summary.

    method: the method the file was trained with; it decides the evaluation path (murauer and the
    other mapped methods: real -> f -> m -> p; synth_only, e.g. the released synthetic-only
    pre-trained model: f -> p)."""
    if method not in METHODS:
        raise ImportOriginalError(f"import-original: --method must be one of {', '.join(METHODS)}, got {method!r}")
    source, out = Path(source), output_file(out, "import-original OUT")
    cfg = load_config(preset or None, [*overrides, "model.released_affine_blocks=true", f"train.method={method}"])
    model = build_model(cfg)
    state = read_state_dict(source)
    converted = convert(state, model, source=str(source))
    bad = non_finite_tensors(converted)
    if bad:
        raise ImportOriginalError(f"import-original: {source}: {describe_non_finite(bad)}; a model with such weights "
                                  f"predicts NaN (a damaged file, or a training that diverged): import another file")
    model.load_state_dict(converted)                         # strict: every name and shape
    checkpoint = {"model": model.state_dict(), "config": public_dict(cfg), "stage": "main", "global_step": 0,
                  "imported_from": {"file": source.name, "sha256": _sha256(source),
                                    "layout": "original MURAUER code (ResNet_Map_PreView state dict)",
                                    "dropped": sorted(DROPPED & set(state)),
                                    "filled": sorted(name for name in original_names(model).values()
                                                     if name not in state)}}
    with atomic_open(out, "wb") as handle:
        torch.save(plain(checkpoint), handle)
    summary = {"out": str(out), "tensors": len(converted), "parameters": sum(p.numel() for p in model.parameters()),
               "method": method, "mapped": uses_mapping(method, "main"),
               "dropped": checkpoint["imported_from"]["dropped"], "filled": checkpoint["imported_from"]["filled"]}
    return summary


def import_original_command(source: str, out: str, preset: str = "nyu", overrides=(), method: str = "murauer") -> dict:
    summary = import_original(source, out, preset=preset, overrides=overrides, method=method)
    path = "real -> f -> m -> p" if summary["mapped"] else "real -> f -> p"
    extra = f"; dropped {', '.join(summary['dropped'])}" if summary["dropped"] else ""
    filled = f"; {len(summary['filled'])} num_batches_tracked set to 0" if summary["filled"] else ""
    print(f"wrote {out}: {summary['tensors']} tensors, {summary['parameters'] / 1e6:.2f} M parameters, "
          f"method {method} ({path}), model.released_affine_blocks=true{extra}{filled}. "
          f"Score it with: murauer-dist evaluate {out} SHARDS")
    return summary
