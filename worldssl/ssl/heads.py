"""Projection and prediction heads: small MLPs, each quoting the architecture of its paper.

The papers use ImageNet-sized widths (2048-4096 hidden units); our defaults are smaller (512 hidden,
128 out) for small RL datasets and encoders with a few hundred output features. Widths are arguments.
"""

from __future__ import annotations

from torch import nn


class MLPHead(nn.Sequential):
    """``num_layers`` linear layers; hidden ones followed by (BatchNorm1d and) ReLU.

    Args:
        batchnorm: BatchNorm1d after every hidden linear layer.
        last_bn: a BatchNorm1d without affine parameters after the output layer (MoCo v3 projector).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2,
                 batchnorm: bool = True, last_bn: bool = False):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim, bias=not last_bn))
        if last_bn:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        super().__init__(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim


class MoCoV2ProjectionHead(MLPHead):
    """MoCo v2 (Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning", sec. 2):
    "we replace the fc head in MoCo with a 2-layer MLP head (hidden layer 2048-d, with ReLU)", 128-d out.
    No BatchNorm."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128):
        super().__init__(in_dim, hidden_dim, out_dim, num_layers=2, batchnorm=False)


class MoCoV3ProjectionHead(MLPHead):
    """MoCo v3 (Chen, Xie & He 2021, sec. 4): "the projection head is a 3-layer MLP ... The hidden layers
    are 4096-d and are with ReLU; the output layers are 256-d, without ReLU. ... all layers in both MLPs
    have BN" (the last BN without affine parameters in their code)."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128):
        super().__init__(in_dim, hidden_dim, out_dim, num_layers=3, batchnorm=True, last_bn=True)


class MoCoV3PredictionHead(MLPHead):
    """MoCo v3 (sec. 4): "the prediction head is a 2-layer MLP", 4096-d hidden with BN and ReLU, 256-d out."""

    def __init__(self, in_dim: int = 128, hidden_dim: int = 512, out_dim: int = 128):
        super().__init__(in_dim, hidden_dim, out_dim, num_layers=2, batchnorm=True)


class SimCLRProjectionHead(MLPHead):
    """SimCLR (Chen et al. 2020, sec. 2.1): "a MLP with one hidden layer ... z = W2 ReLU(W1 h)", 128-d out;
    the official code adds BatchNorm to the hidden layer, as here."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128):
        super().__init__(in_dim, hidden_dim, out_dim, num_layers=2, batchnorm=True)


class BYOLProjectionHead(MLPHead):
    """BYOL (Grill et al. 2020, sec. 3.3): "a multi-layer perceptron (MLP) consisting in a linear layer with
    output size 4096 followed by batch normalization, rectified linear units (ReLU), and a final linear
    layer with output dimension 256"."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128):
        super().__init__(in_dim, hidden_dim, out_dim, num_layers=2, batchnorm=True)


class BYOLPredictionHead(MLPHead):
    """BYOL (sec. 3.3): "The predictor q_theta uses the same architecture as g_theta" (the projector)."""

    def __init__(self, in_dim: int = 128, hidden_dim: int = 512, out_dim: int = 128):
        super().__init__(in_dim, hidden_dim, out_dim, num_layers=2, batchnorm=True)
