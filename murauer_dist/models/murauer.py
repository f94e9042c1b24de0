"""MurauerModel: encoder f, mapping m, pose head p and view decoder g, with named outputs.

No parallelism here. `forward(requests)` runs one independent pass per named request (one per
data stream), so BatchNorm sees domain-pure batches as in the original, and a DDP wrapper sees a
single forward per training step.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from murauer_dist.models.encoder import Encoder
from murauer_dist.models.mapping import Mapping
from murauer_dist.models.pose_head import PoseHead
from murauer_dist.models.view_decoder import ViewDecoder


class MurauerModel(nn.Module):
    def __init__(self, crop_size: int, in_features: int, stage_widths: list[int], blocks_per_stage: int,
                 embed_dim: int, decoder_features: int, num_joints: int, affine_blocks: bool = False):
        super().__init__()
        self.encoder = Encoder(crop_size, in_features, stage_widths, blocks_per_stage, embed_dim)
        self.mapping = Mapping(embed_dim, affine=affine_blocks)
        self.pose_head = PoseHead(embed_dim, num_joints)
        self.view_decoder = ViewDecoder(crop_size, embed_dim, decoder_features)
        init_weights(self)

    def embed(self, depth: torch.Tensor, mapped: bool, detach_z: bool = False) -> dict[str, torch.Tensor]:
        """z = f(depth); emb = relu(m(z)) for real inputs, relu(z) for synthetic ones.

        detach_z stops the gradient at f's output (the adversarial path trains m only).
        """
        z = self.encoder(depth)
        source = z.detach() if detach_z else z
        emb = torch.relu(self.mapping(source) if mapped else source)
        return {"z": z, "emb": emb}

    def pose(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        """hidden h (B, D) and normalised joints (B, J, 3)."""
        return self.pose_head(emb)

    def view(self, hidden: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predicted other view (B, 1, H, W) in [-1, 1] from h and the 3-d conditioning centre."""
        return self.view_decoder(hidden, cond)

    def run(self, depth: torch.Tensor, mapped: bool, pose: bool = True, cond: torch.Tensor | None = None,
            detach_z: bool = False, grad: bool = True) -> dict[str, torch.Tensor]:
        """One pass: embedding, then (optionally) pose and (if cond is given) the predicted view.

        grad=False: no graph (features only needed detached, e.g. for the discriminator).
        """
        if not grad:
            with torch.no_grad():
                return self.run(depth, mapped, pose, cond, detach_z)
        out = self.embed(depth, mapped, detach_z)
        if pose or cond is not None:
            out.update(self.pose(out["emb"]))
        if cond is not None:
            out["view"] = self.view(out["hidden"], cond)
        return out

    def forward(self, requests: dict[str, dict]) -> dict[str, dict[str, torch.Tensor]]:
        """{name: kwargs of `run`} -> {name: outputs}; each request is its own BatchNorm batch."""
        return {name: self.run(**request) for name, request in requests.items()}

    @torch.no_grad()
    def predict(self, depth: torch.Tensor, mapped: bool) -> torch.Tensor:
        """Normalised joints (B, J, 3) for evaluation (call .eval() first).

        mapped: real images of a model whose method trained m (methods.uses_mapping); False for
        synthetic images and for models that never trained m.
        """
        return self.pose(self.embed(depth, mapped)["emb"])["pose"]


def init_weights(module: nn.Module) -> None:
    """docs/method.md §3.6: conv N(0, sqrt(2 / (k*k*out))), BN gamma 1 beta 0, Linear/ConvT defaults."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / (kh * kw * layer.out_channels)))
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def build_model(cfg) -> MurauerModel:
    m = cfg.model
    return MurauerModel(cfg.data.crop_size, m.in_features, list(m.stage_widths), m.blocks_per_stage,
                        m.embed_dim, m.decoder_features, m.num_joints, affine_blocks=m.released_affine_blocks)


COMPILE_BACKEND = "inductor"     # tests use dynamo's "eager" (inductor compiles for minutes on a CPU)


def compile_networks(model: MurauerModel, backend: str | None = None) -> MurauerModel:
    """torch.compile f, m, p and g in place (cfg.model.compile). Module.compile keeps the parameter
    names, so checkpoints of compiled and plain runs are interchangeable."""
    for network in (model.encoder, model.mapping, model.pose_head, model.view_decoder):
        network.compile(backend=backend or COMPILE_BACKEND)
    return model


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
