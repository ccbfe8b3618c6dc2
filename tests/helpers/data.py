"""Stand-ins for the data pipeline's inputs, and the slow obvious construction of a sample, for the
unit tests of the schedule, the bagging, the dataset, the run context and the metrics."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np


class ArrayStore:
    """A token store stand-in over a numpy array (the real store: tests/datastore)."""

    def __init__(self, tokens, path="<array>"):
        self.tokens = np.asarray(tokens, dtype=np.uint32)
        self.path = path

    def __len__(self):
        return len(self.tokens)

    def slice(self, start, stop):
        assert 0 <= start <= stop <= len(self.tokens)
        return self.tokens[start:stop]


def job(steps=10, r=0.3, s=4, enable=True, local_batch=2, global_batch=-1, seq_len=8, mode="full"):
    """The parts of a job config the data pipeline reads."""
    return SimpleNamespace(
        tst=SimpleNamespace(enable=enable, bag_size=s, superposition_fraction=r, mode=mode,
                            loss_weighting="uniform", optimizer_at_switch="keep", rewarm_steps=0,
                            window_order="stream"),
        training=SimpleNamespace(
            steps=steps, local_batch_size=local_batch, global_batch_size=global_batch, seq_len=seq_len
        ),
    )


#: Tokens one phase-1 sample of each tst.mode takes: L positions and what their labels need.
NAIVE_WINDOW = {"full": lambda s, L: s * (L + 1), "input_only": lambda s, L: s * L + 1,
                "output_only": lambda s, L: L + s}


def naive_sample(chunk, mode, s, L, bag=True):
    """(input, labels) of one window, written out the slow obvious way, for every tst.mode; phase 1 of
    full:        input bag j = tokens j*s .. j*s+s-1, labels = the next bag;
    input_only:  input bag j as in full, label = token (j+1)*s (the one right after the bag);
    output_only: input token t, labels = tokens t+1 .. t+s;
    and plain (``bag=False``): tokens 0..L-1, labels their next tokens."""
    if bag and mode == "full":
        inputs = [[chunk[j * s + k] for k in range(s)] for j in range(L)]
        labels = [[chunk[(j + 1) * s + k] for k in range(s)] for j in range(L)]
    elif bag and mode == "input_only":
        inputs = [[chunk[j * s + k] for k in range(s)] for j in range(L)]
        labels = [chunk[(j + 1) * s] for j in range(L)]
    elif bag and mode == "output_only":
        inputs = [chunk[t] for t in range(L)]
        labels = [[chunk[t + k] for k in range(1, s + 1)] for t in range(L)]
    else:
        inputs, labels = list(chunk[:L]), list(chunk[1 : L + 1])
    return inputs, labels
