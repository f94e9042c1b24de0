"""The loss terms of docs/method.md §4, each a small named function, computed in float32.

Scalings follow the original code: sums of squared errors (SSE) for full streams, and
batch-size x MSE for the labeled part of the view-prediction batch.
"""
from __future__ import annotations

import torch


def sse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (prediction.float() - target.float()).pow(2).sum()


def scaled_mse(prediction: torch.Tensor, target: torch.Tensor, scale: float) -> torch.Tensor:
    """scale x mean squared error; zero (not NaN) when there are no samples."""
    if prediction.numel() == 0:
        return prediction.float().sum() * 0.0
    return scale * (prediction.float() - target.float()).pow(2).mean()


def weighted_scaled_mse(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                        scale: float) -> torch.Tensor:
    """scale x mean squared error over the frames of weight 1 (weights: (B,) of 0/1); zero when no
    frame has weight 1. scaled_mse of the selected frames, without selecting them: selection by a
    mask reads the mask back to the host (a device sync); this stays on the device. Equal to
    scaled_mse(prediction[mask], ...) up to the order of the float32 sum.
    """
    squared = (prediction.float() - target.float()).pow(2).flatten(1).mul(weights.float()[:, None])
    count = weights.float().sum().clamp(min=1.0) * squared.shape[1]
    return scale * squared.sum() / count


def pose_sse(pose: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pose loss on fully labeled streams: SSE over joints and coordinates."""
    return sse(pose, target)


def feature_matching_sse(real_emb: torch.Tensor, synth_emb: torch.Tensor) -> torch.Tensor:
    """||m(f(x_r)) - sg(f(x_s))||^2: the synthetic feature is the fixed target."""
    return sse(real_emb, synth_emb.detach())


def view_l1(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum of absolute pixel differences of the predicted view."""
    return (predicted.float() - target.float()).abs().sum()


def lsgan_sse(scores: torch.Tensor, label: float) -> torch.Tensor:
    """Least-squares GAN term without the 1/2 factor, as the original code."""
    return (scores.float() - label).pow(2).sum()


def pretrain_pose_loss(pose: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Stage 1: MSE x batch size (= SSE / 3J)."""
    return scaled_mse(pose, target, float(pose.shape[0]))
