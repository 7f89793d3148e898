"""FastDropout is dropout: the right share dropped, survivors scaled, gradients masked alike,
seeded, in the activations' own dtype and memory order; swapping it in changes no weights."""

import math

import pytest
import torch
from torch import nn

from utils.fast_dropout import LEVELS, FastDropout, random_16_bit_like, use_fast_dropout
from utils.model import Net


def test_drawn_probability_is_p_rounded_to_a_65536th():
    dropout = FastDropout(0.05)
    assert dropout.drop_levels == 3277
    assert abs(dropout.drawn_p - 0.05) <= 0.5 / LEVELS


def test_random_bits_cover_the_int16_range_evenly():
    bits = random_16_bit_like(torch.empty(400_000))
    counts = torch.bincount((bits.long() + 32768) // 4096, minlength=16)  # 16 equal bins
    expected = len(bits) / 16
    assert bits.dtype == torch.int16 and bits.shape == (400_000,)
    assert counts.min() > expected - 5 * math.sqrt(expected)
    assert counts.max() < expected + 5 * math.sqrt(expected)


@pytest.mark.parametrize("p", [0.05, 0.5])
def test_share_dropped_is_p_and_survivors_are_scaled(p):
    torch.manual_seed(0)
    dropout = FastDropout(p).train()
    activations = torch.rand(64, 16, 26, 26) + 1.0  # never 0, so a 0 out means dropped
    output = dropout(activations)
    dropped = (output == 0).double().mean().item()
    spread = math.sqrt(p * (1 - p) / activations.numel())
    assert abs(dropped - dropout.drawn_p) < 5 * spread
    kept = output != 0
    scale = 1.0 / (1.0 - dropout.drawn_p)
    torch.testing.assert_close(output[kept], activations[kept] * scale)


def test_gradient_is_masked_and_scaled_like_the_output():
    torch.manual_seed(1)
    activations = torch.rand(8, 16, 10, 10, requires_grad=True)
    dropout = FastDropout(0.3).train()
    output = dropout(activations)
    output.sum().backward()
    # d(output)/d(input) is the scaled mask, which output / input recovers
    torch.testing.assert_close(activations.grad, output.detach() / activations.detach())


def test_eval_mode_and_p_zero_pass_the_input_through():
    activations = torch.randn(4, 16, 6, 6)
    assert FastDropout(0.05).eval()(activations) is activations
    assert FastDropout(0.0).train()(activations) is activations


def test_same_seed_same_mask_other_seed_other_mask():
    activations = torch.ones(4, 16, 12, 12)
    masks = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        masks.append(FastDropout(0.2).train()(activations))
    assert torch.equal(masks[0], masks[1])
    assert not torch.equal(masks[0], masks[2])


def test_keeps_the_dtype_and_channels_last_order():
    activations = torch.rand(8, 32, 24, 24).to(torch.bfloat16)
    activations = activations.contiguous(memory_format=torch.channels_last)
    output = FastDropout(0.05).train()(activations)
    assert output.dtype == torch.bfloat16
    assert output.is_contiguous(memory_format=torch.channels_last)


def test_use_fast_dropout_swaps_every_dropout_and_keeps_the_weights():
    torch.manual_seed(0)
    model = Net(dropout=0.1)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    dropouts = [m for m in model.modules() if type(m) is nn.Dropout]
    swapped = use_fast_dropout(model)
    fast = [m for m in swapped.modules() if isinstance(m, FastDropout)]
    assert swapped is model and len(dropouts) == len(fast) == 6
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert all(m.p == 0.1 for m in fast)
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[key], before[key]) for key in before)


def test_in_eval_mode_the_swapped_model_computes_the_same_outputs():
    torch.manual_seed(0)
    model = Net().eval()
    images = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        before = model(images)
        after = use_fast_dropout(model)(images)
    assert torch.equal(before, after)
