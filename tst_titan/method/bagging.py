"""A token window -> (input, labels): the one place where text is cut into bags.

=================  ===================  ==========================================  =============
``tst.mode``       input                labels                                      window
=================  ===================  ==========================================  =============
``full``           ``[L, s]`` bags      ``[L, s]``: the next bag                    ``s * (L + 1)``
``input_only``     ``[L, s]`` bags      ``[L]``: the next token after each bag      ``s * L + 1``
                                        (the first token of the next bag)
``output_only``    ``[L]`` tokens       ``[L, s]``: tokens ``t+1 .. t+s``           ``L + s``
plain (phase 2)    ``[L]`` tokens       ``[L]``: the next token                     ``L + 1``
=================  ===================  ==========================================  =============

The model averages when its *input* is 3-D and the loss takes the bag form when the *labels* are
3-D, so nothing else needs to know the mode or the phase.
"""

from __future__ import annotations

import torch

from tst_titan.method.schedule import window_size


def next_token_sample(window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[L + 1]`` tokens -> input ``[L]``, labels ``[L]`` (each position's next token)."""
    return window[:-1], window[1:]


def make_sample(window: torch.Tensor, mode: str, bag_size: int, seq_len: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """One phase-1 sample of ``mode`` from a 1-D window of ``window_size(mode, s, L)`` tokens
    (see the table in the module docstring)."""
    s, L = bag_size, seq_len
    expected = window_size(mode, s, L)
    if window.dim() != 1 or window.numel() != expected:
        raise ValueError(f"a {mode!r} sample needs a 1-D window of {expected} tokens, got {tuple(window.shape)}")
    if mode == "input_only":
        # [s*L + 1] -> input: bags 0..L-1; label of bag j: token (j+1)*s, the one after it.
        return window[: s * L].view(L, s), window[s : s * L + 1 : s].contiguous()
    if mode == "output_only":
        # [L + s] -> input: tokens 0..L-1; labels of position t: tokens t+1..t+s.
        return window[:L], window[1:].unfold(0, s, 1).contiguous()
    # full: [s*(L+1)] -> input: bags 0..L-1, labels: bags 1..L (each position's next bag).
    bags = window.view(L + 1, s)
    return bags[:-1], bags[1:]
