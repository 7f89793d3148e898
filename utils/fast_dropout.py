"""Dropout whose random mask costs a quarter of the random numbers torch's CPU dropout draws.

On the CPU, `nn.Dropout` draws one random number per activation, one after another from a
single generator. For this model that is more than half of a training step: the activations
are many (128 x 32 x 24 x 24 after the second block) and each layer's work is small.
`FastDropout` draws 64 random bits at a time and uses 16 of them per activation, four
activations per draw. It is the same kind of dropout (every activation dropped on its own with
probability p, the survivors scaled up so the expected output is the input), with p rounded to a
multiple of 1/65,536: 0.05 becomes 3,277/65,536 = 0.0500031.
"""

import math

import torch
from torch import nn

LEVELS = 2 ** 16  # 16 random bits per activation


def random_16_bit_like(tensor):
    """Uniformly random int16 values (all 65,536 equally likely), shaped like `tensor` and laid
    out in memory like it (contiguous or channels-last), so that combining the two is fast."""
    count = tensor.numel()
    words = torch.empty(math.ceil(count / 4), dtype=torch.int64, device=tensor.device)
    words.random_(-2 ** 63, None)  # the whole 64-bit range: 64 independent random bits each
    layout = torch.empty_like(tensor, dtype=torch.int16)  # allocated, never filled: its strides
    return words.view(torch.int16)[:count].as_strided(tensor.shape, layout.stride())


class FastDropout(nn.Dropout):
    """`nn.Dropout` with its mask drawn from 16 random bits per activation.

    An activation is dropped when its 16 bits, read as a number from 0 to 65,535, fall below
    `drop_levels` = round(p x 65,536); the kept ones are multiplied by 1 / (1 - `drawn_p`).
    In eval mode, as with `nn.Dropout`, the input passes through unchanged.
    """

    def __init__(self, p=0.5):
        super().__init__(p)
        self.drop_levels = round(p * LEVELS)

    @property
    def drawn_p(self):
        """The drop probability actually used: p rounded to a multiple of 1/65,536."""
        return self.drop_levels / LEVELS

    def forward(self, activations):
        if not self.training or self.drop_levels == 0:
            return activations
        # int16 runs from -32,768, so "below drop_levels" reads "below drop_levels - 32,768"
        keep = random_16_bit_like(activations) >= self.drop_levels - LEVELS // 2
        scaled_mask = keep.to(activations.dtype).mul_(1.0 / (1.0 - self.drawn_p))
        return activations * scaled_mask


def use_fast_dropout(model):
    """Replace every `nn.Dropout` in `model` by a `FastDropout` of the same p and mode (train
    or eval); returns `model`.

    Dropout has no parameters or buffers, so the model's state dict, and its checkpoints, are
    the same before and after.
    """
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, FastDropout(child.p).train(child.training))
    return model
