"""Where each training sample's window starts when windows are read in a seeded random order.

Read in stream order, consecutive samples are consecutive windows of the token stream, so one
optimizer step sees a few neighbouring documents (on the embedded corpus: one or two source files)
and a run's last steps -- its learning-rate decay -- see whatever files come last. Final losses then
depend on which files those are, and two runs that have read different amounts of text (a TST run
and its baseline, or baselines of different lengths) are compared on different files. Shuffled,
every sample is a window drawn without replacement from the whole epoch, as a pretraining pipeline
over pre-shuffled sequences would serve it.

The order is a pure function of the sample index (so resuming, and a cool-down branch started from
a checkpoint, read what an uninterrupted run reads):

* The samples of every data-parallel rank are interleaved: per-rank sample ``i`` of rank ``r`` is
  the epoch's window number ``i * world + r`` (a *round* is one sample on every rank). An epoch
  ends when fewer than ``world`` windows are left in it.
* Phase 1 draws windows of its own size ``phase1_window`` (``s x (L + 1)`` tokens in ``full``
  mode) from a permutation of the epoch's phase-1 windows.
* Phase 2 draws ``L + 1``-token windows. In the epoch in which phase 1 ended, it draws only from
  the phase-1 windows not yet read, each cut into ``phase1_window // phase2_window`` phase-2
  windows (all of it in ``full`` mode), in a permutation of those -- so a TST run does not read
  again, in the same epoch, text it read as bags. Later epochs (and a run with no phase 1, the
  baseline) permute all the stream's ``L + 1``-token windows.

Permutations come from numpy's ``PCG64`` seeded by ``(seed, epoch, kind)``: the same on every
machine. Each rank holds the current epoch's permutation, 8 bytes per window (about 4 GB for 10^12
tokens at ``L = 2048``; a keyed bijection of the window indices would need none). Two runs with the same seed and ``L`` read the same windows in every epoch that has no
phase-1 text in it.
"""

from __future__ import annotations

import numpy as np

#: the permutation kinds, part of each permutation's seed
_PHASE1, _PHASE2, _SWITCH_EPOCH = 1, 2, 3


def permutation(count: int, seed: int, epoch: int, kind: int) -> np.ndarray:
    """A permutation of ``range(count)`` from ``(seed, epoch, kind)``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, kind]))).permutation(count)


class ShuffledWindows:
    """Window starts of a run whose samples are drawn in a seeded random order (see the module).

    ``n_tokens``: the split's stream; ``phase1_window`` / ``phase2_window``: tokens per sample in
    each phase; ``switch_sample``: per-rank index of the first phase-2 sample (0: no phase 1);
    ``world``: data-parallel ranks; ``seed``: ``tst.data_seed``.
    """

    def __init__(self, n_tokens: int, phase1_window: int, phase2_window: int, switch_sample: int,
                 world: int, seed: int) -> None:
        self.n_tokens, self.world, self.seed = int(n_tokens), int(world), int(seed)
        self.phase1_window, self.phase2_window = int(phase1_window), int(phase2_window)
        self.switch_sample = int(switch_sample)
        self.phase2_windows = self.n_tokens // self.phase2_window
        self.phase2_rounds = self.phase2_windows // self.world  # per full epoch
        if self.phase2_rounds < 1:
            raise ValueError(f"{self.world} windows of {self.phase2_window} tokens do not fit "
                             f"{self.n_tokens} tokens")
        if self.switch_sample:
            self.phase1_windows = self.n_tokens // self.phase1_window
            self.phase1_rounds = self.phase1_windows // self.world
            if self.phase1_rounds < 1:
                raise ValueError(f"{self.world} windows of {self.phase1_window} tokens do not fit "
                                 f"{self.n_tokens} tokens")
            # where phase 1 leaves its last epoch: the epoch, and the phase-1 windows read in it
            self.switch_epoch, rounds_read = divmod(self.switch_sample, self.phase1_rounds)
            self.phase1_read = rounds_read * self.world
        else:
            self.switch_epoch, self.phase1_read = 0, 0
        # the switch epoch's phase-2 pool: the unread phase-1 windows, each cut into `split`
        self.split = self.phase1_window // self.phase2_window
        pool = (self.phase1_windows - self.phase1_read) * self.split if self.phase1_read else 0
        self.switch_epoch_rounds = pool // self.world
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def _permutation(self, count: int, epoch: int, kind: int) -> np.ndarray:
        key = (epoch, kind)
        if key not in self._cache:
            if len(self._cache) > 4:  # epochs are read in order: keep only the recent ones
                self._cache.clear()
            self._cache[key] = permutation(count, self.seed, epoch, kind)
        return self._cache[key]

    def start(self, sample_index: int, rank: int) -> tuple[int, int]:
        """``(first token, epoch)`` of per-rank sample ``sample_index`` of ``rank``."""
        if sample_index < self.switch_sample:
            epoch, rounds = divmod(sample_index, self.phase1_rounds)
            window = self._permutation(self.phase1_windows, epoch, _PHASE1)[rounds * self.world + rank]
            return int(window) * self.phase1_window, epoch
        rounds = sample_index - self.switch_sample
        if rounds < self.switch_epoch_rounds:
            unread = self._permutation(self.phase1_windows, self.switch_epoch, _PHASE1)[self.phase1_read:]
            pool = self._permutation(len(unread) * self.split, self.switch_epoch, _SWITCH_EPOCH)
            piece = int(pool[rounds * self.world + rank])
            block, part = divmod(piece, self.split)
            return int(unread[block]) * self.phase1_window + part * self.phase2_window, self.switch_epoch
        rounds -= self.switch_epoch_rounds
        # the first epoch with every window available: the switch epoch itself if phase 1 ended
        # at an epoch's end (or never ran), else the next one
        first_full = self.switch_epoch + (1 if self.phase1_read else 0)
        epochs, rounds = divmod(rounds, self.phase2_rounds)
        epoch = first_full + epochs
        window = self._permutation(self.phase2_windows, epoch, _PHASE2)[rounds * self.world + rank]
        return int(window) * self.phase2_window, epoch
