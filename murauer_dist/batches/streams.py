"""The streams of a MURAUER step: which shard members each reads, and raw -> contract batch.

Both loaders (DALI and reference) produce the same *raw* stream dicts: warped, noisy crops in mm
(B,1,C,C) float32, plus the random draws and the stored labels. The functions here turn them into
the batch contract of batch.py with the same torch code (augment.py), so the two backends can only
differ in decoding, reading and warping: finish_labels where the raw labels are (the CPU for both
loaders), finish_images where the raw images are (the GPU for DALI on the GPU); finish does both.

Raw fields: crop (B, *schema.crop_shape), joints (B, *schema.joints_shape) (NYU: (B,3,8) and
(B,3,2,14,3)), theta (B,), jitter (B,3), frame (B,) int64, and per stream: pairs real/synth; synth
depth/cam (0-based); views real/synth (camera 1 input), real_view/synth_view (target camera, no
jitter, no noise), cond_real/cond_synth (B,3) mm noise, from_labeled (B,) bool; unlabeled_* depth;
eval depth.
"""
from __future__ import annotations

import torch

from murauer_dist.batches import augment
from murauer_dist.batches.augment import CUBE, Z_C
from murauer_dist.shards.schema import CROP_MEMBER, JOINTS_MEMBER, SampleLayout, crop_member
from murauer_dist.frames.datasets import Camera
from murauer_dist.errors import UserError


# Evaluation reads camera-1 crops of one domain: real (the protocol) or their synthetic twins (to
# measure how much of the real error is domain gap rather than pose error).
EVAL_STREAMS = {"real": "eval", "synth": "eval_synth"}
_EVAL_DOMAIN = {stream: domain for domain, stream in EVAL_STREAMS.items()}


def synth_field(slot: int) -> str:
    """The synth stream's raw field holding camera slot `slot`'s crop (the stream draws one per sample)."""
    return f"synth{slot}"


def needed_members(stream: str, encoding: str, layout: SampleLayout, view_camera: int) -> dict[str, str]:
    """Raw field -> shard member the stream reads (the images plus labels and crop geometry);
    `layout`: the samples' camera slots (the synth stream reads them all) and domains (a dataset
    without synthetic twins: the pairs stream reads the real half only, streams of synthetic crops
    are an error)."""
    def crop(domain: str, slot: int = 1) -> str:
        if domain not in layout.domains:
            raise UserError(f"the {stream} stream reads {domain} crops, but the dataset's shards hold only "
                            f"{', '.join(layout.domains)} crops (its spec says synthetic: false)")
        return crop_member(domain, slot, encoding)

    labels = {"joints": JOINTS_MEMBER, "crop": CROP_MEMBER}
    slots = layout.slots
    if stream == "pairs":
        halves = {domain: crop(domain) for domain in ("real", "synth") if domain in layout.domains}
        return {**halves, **labels}
    if stream == "synth":
        return {synth_field(slot): crop("synth", slot) for slot in slots} | labels
    if stream == "views":
        return {"real": crop("real"), "synth": crop("synth"), "real_view": crop("real", view_camera),
                "synth_view": crop("synth", view_camera), **labels}
    if stream == "unlabeled_real":
        return {"depth": crop("real"), "crop": CROP_MEMBER}
    if stream == "unlabeled_synth":
        return {"depth": crop("synth"), "crop": CROP_MEMBER}
    if stream in _EVAL_DOMAIN:                 # camera-1 crops of one domain, with their labels
        return {"depth": crop(_EVAL_DOMAIN[stream]), **labels}
    raise ValueError(f"unknown stream {stream!r}")


def _camera(tensor: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """tensor[b, cam[b]] for a (B,3,...) tensor."""
    return tensor[torch.arange(tensor.shape[0], device=tensor.device), cam]


# Raw image field -> (contract name, the centre it is normalised around): "sample" is the sample's
# jittered crop centre, "view" the target view's stored centre (no jitter).
IMAGE_FIELDS = {
    "pairs": {"real": ("real_depth", "sample"), "synth": ("synth_depth", "sample")},
    "synth": {"depth": ("depth", "sample")},
    "views": {"real": ("real_depth", "sample"), "synth": ("synth_depth", "sample"),
              "real_view": ("real_view", "view"), "synth_view": ("synth_view", "view")},
    "unlabeled_real": {"depth": ("depth", "sample")},
    "unlabeled_synth": {"depth": ("depth", "sample")},
    **{stream: {"depth": ("depth", "sample")} for stream in _EVAL_DOMAIN},
}


def image_fields(stream: str) -> dict:
    if stream not in IMAGE_FIELDS:
        raise ValueError(f"unknown stream {stream!r}")
    return IMAGE_FIELDS[stream]


def _labeled_sample(raw: dict, cam: torch.Tensor, camera: Camera) -> dict:
    crop, joints = _camera(raw["crop"], cam), _camera(raw["joints"], cam)
    out = augment.transform_joints(joints[:, 0], joints[:, 1], crop, raw["theta"], raw["jitter"], camera)
    out["center_z"] = crop[:, Z_C].double() + raw["jitter"][:, 2].double()
    out["cube_mm"] = crop[:, CUBE].float()
    return out


def finish_labels(stream: str, raw: dict, camera: Camera, labeled_frames: torch.Tensor | None = None,
                  view_camera: int = 3) -> tuple[dict, dict]:
    """The label part of finish, on the device of the raw labels (both loaders: the CPU).

    Returns (the contract's label tensors, the per-sample centres the images are normalised around:
    {"sample": (z, cube), "view": (z, cube)}, see IMAGE_FIELDS)."""
    image_fields(stream)                            # an unknown stream fails here, before any work
    if stream in ("unlabeled_real", "unlabeled_synth"):
        z = raw["crop"][:, 0, Z_C].double() + raw["jitter"][:, 2].double()
        return {"frame": raw["frame"]}, {"sample": (z, raw["crop"][:, 0, CUBE])}
    cam1 = torch.zeros(raw["frame"].shape[0], dtype=torch.long, device=raw["frame"].device)
    cam = raw["cam"].long() if stream == "synth" else cam1
    sample = _labeled_sample(raw, cam, camera)
    centres = {"sample": (sample["center_z"], sample["cube_mm"])}
    if stream != "views":
        return {"target": sample["target"], "center_xyz": sample["center_xyz"], "cube_mm": sample["cube_mm"],
                "frame": raw["frame"]}, centres
    view_crop = raw["crop"][:, view_camera - 1]
    labeled = raw["from_labeled"].bool()
    if labeled_frames is not None and labeled_frames.numel():
        labeled = labeled | torch.isin(raw["frame"], labeled_frames.to(raw["frame"].device))
    labels = {"real_cond": augment.condition(sample["center_xyz"], raw["cond_real"]),
              "synth_cond": augment.condition(sample["center_xyz"], raw["cond_synth"]),
              "target": sample["target"], "labeled": labeled, "frame": raw["frame"]}
    return labels, {**centres, "view": (view_crop[:, Z_C], view_crop[:, CUBE])}


def finish_images(stream: str, raw: dict, centres: dict) -> dict:
    """The image part of finish: depth normalisation of the raw images where they are (a GPU for DALI
    on the GPU); `centres` from finish_labels, best already on the images' device."""
    return {name: augment.normalize_depth(raw[field], *centres[centre])
            for field, (name, centre) in image_fields(stream).items() if field in raw}   # pairs: maybe no synth


def finish(stream: str, raw: dict, camera: Camera, labeled_frames: torch.Tensor | None = None,
           view_camera: int = 3) -> dict:
    """Raw stream dict -> the contract's named tensors (labels where the raw labels are, images where
    the raw images are); `camera`: the dataset's."""
    labels, centres = finish_labels(stream, raw, camera, labeled_frames, view_camera)
    return {**finish_images(stream, raw, centres), **labels}
