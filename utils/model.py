"""The 13,808-parameter MNIST classifier, defined once for the whole course."""

import torch.nn.functional as F
from torch import nn


def conv_block(in_channels, out_channels, dropout, padding=0):
    """A bias-free 3x3 convolution followed by ReLU, batch norm and dropout, in that order."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=padding, bias=False),
        nn.ReLU(),
        nn.BatchNorm2d(out_channels),
        nn.Dropout(dropout),
    )


class Net(nn.Module):
    """Convolution blocks, a 1x1 transition, max pooling, global average pooling, 1x1 classifier.

    The forward pass returns log-probabilities over the ten digits, to be trained with the
    negative log-likelihood loss.
    """

    def __init__(self, dropout=0.05):
        super().__init__()
        self.block1 = conv_block(1, 16, dropout)      # 28 -> 26
        self.block2 = conv_block(16, 32, dropout)     # 26 -> 24
        self.transition = nn.Conv2d(32, 10, kernel_size=1, bias=False)
        self.pool = nn.MaxPool2d(2)                   # 24 -> 12
        self.block3 = conv_block(10, 16, dropout)     # 12 -> 10
        self.block4 = conv_block(16, 16, dropout)     # 10 -> 8
        self.block5 = conv_block(16, 16, dropout)     # 8 -> 6
        self.block6 = conv_block(16, 16, dropout, padding=1)  # 6 -> 6
        self.gap = nn.AvgPool2d(6)                    # 6 -> 1
        self.classifier = nn.Conv2d(16, 10, kernel_size=1, bias=False)

    def forward(self, images):
        x = self.block2(self.block1(images))
        x = self.pool(self.transition(x))
        x = self.block6(self.block5(self.block4(self.block3(x))))
        logits = self.classifier(self.gap(x)).flatten(1)
        return F.log_softmax(logits, dim=1)
