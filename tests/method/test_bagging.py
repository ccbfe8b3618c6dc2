"""Cutting a token window into one sample: every tst.mode against the naive construction."""

import pytest
import torch

from tests.helpers.data import NAIVE_WINDOW, naive_sample
from tst_titan.job_config import MODES
from tst_titan.method.bagging import make_sample, next_token_sample

#: (input shape, label shape) of a phase-1 sample per tst.mode, at L positions and bag size s.
SHAPES = {
    "full": lambda s, L: ((L, s), (L, s)),
    "input_only": lambda s, L: ((L, s), (L,)),
    "output_only": lambda s, L: ((L,), (L, s)),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("s, L", [(1, 8), (3, 8), (4, 5), (16, 3)])
def test_make_sample_matches_the_naive_construction(mode, s, L):
    window = torch.randint(0, 1000, (NAIVE_WINDOW[mode](s, L),), generator=torch.Generator().manual_seed(s))
    inputs, labels = make_sample(window, mode, s, L)
    ref_in, ref_lab = naive_sample(window.tolist(), mode, s, L)
    assert inputs.tolist() == ref_in and labels.tolist() == ref_lab
    assert (tuple(inputs.shape), tuple(labels.shape)) == SHAPES[mode](s, L)
    assert labels.is_contiguous()


def test_mode_targets_on_a_counting_window():
    """Token t of the window is the number t: the targets can be read off directly."""
    L, s = 4, 3
    x, y = make_sample(torch.arange(13), "input_only", s, L)  # s*L + 1 tokens
    assert x.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert y.tolist() == [3, 6, 9, 12]  # the first token of the next bag
    x, y = make_sample(torch.arange(7), "output_only", s, L)  # L + s tokens
    assert x.tolist() == [0, 1, 2, 3]
    assert y.tolist() == [[1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 6]]  # the next s tokens
    x, y = make_sample(torch.arange(15), "full", s, L)  # s*(L + 1) tokens
    assert x.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert y.tolist() == [[3, 4, 5], [6, 7, 8], [9, 10, 11], [12, 13, 14]]  # the next bag


def test_next_token_sample():
    x, y = next_token_sample(torch.arange(9))
    assert x.tolist() == list(range(8)) and y.tolist() == list(range(1, 9))


@pytest.mark.parametrize("mode", MODES)
def test_a_window_of_another_size_is_refused(mode):
    size = NAIVE_WINDOW[mode](3, 4)
    with pytest.raises(ValueError, match=rf"a '{mode}' sample needs a 1-D window of {size} tokens, got \({size + 1},\)"):
        make_sample(torch.arange(size + 1), mode, 3, 4)
    with pytest.raises(ValueError, match="1-D window"):
        make_sample(torch.arange(size).view(1, size), mode, 3, 4)
