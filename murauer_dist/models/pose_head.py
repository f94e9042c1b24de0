"""Pose head p: emb -> FC -> ReLU (= hidden h, read by the view decoder) -> FC 3J (docs/method.md §3.3)."""
from __future__ import annotations

import torch
from torch import nn


class PoseHead(nn.Module):
    def __init__(self, embed_dim: int, num_joints: int):
        super().__init__()
        self.num_joints = num_joints
        self.fc_hidden = nn.Linear(embed_dim, embed_dim)
        self.fc_pose = nn.Linear(embed_dim, 3 * num_joints)

    def forward(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = torch.relu(self.fc_hidden(emb))
        pose = self.fc_pose(hidden).view(-1, self.num_joints, 3)
        return {"hidden": hidden, "pose": pose}
