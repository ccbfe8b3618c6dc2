"""When phase 1 ends, and which tokens a sample takes: the schedule of a TST run, in plain numbers.

A run of ``steps`` optimizer steps trains steps ``1 .. switch_step`` on bags (phase 1,
superposition) and the rest on ordinary next-token samples (phase 2, recovery), with
``switch_step = round(r * steps)``. The switch is also a *sample count* per data-parallel rank
(``switch_step x samples per step``), so a batch never mixes phases and the data position after any
number of samples is a pure function of that number (:meth:`PhaseSchedule.position_after`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tst_titan.job_config import MODES


def switch_step(superposition_fraction: float, steps: int) -> int:
    """The last phase-1 step: ``round(r * steps)`` (Python's round: halves go to the even step)."""
    return round(superposition_fraction * steps)


def gradient_accumulation_steps(global_batch_size: int, local_batch_size: int, dp_world_size: int) -> int:
    """Microbatches per optimizer step, as torchtitan derives it (``global_batch_size`` < 0 means
    one microbatch of ``local_batch_size`` per data-parallel rank)."""
    if global_batch_size < 0:
        global_batch_size = local_batch_size * dp_world_size
    return max(global_batch_size // (local_batch_size * dp_world_size), 1)


def window_size(mode: str, bag_size: int, seq_len: int) -> int:
    """Tokens one phase-1 sample of ``mode`` takes: L positions and the tokens their labels need.
    With ``bag_size`` 1 every mode is the plain ``L + 1``. (Called per sample: numbers only.)"""
    s, L = bag_size, seq_len
    if mode == "full":
        return s * (L + 1)
    if mode == "input_only":
        return s * L + 1
    if mode == "output_only":
        return L + s
    raise ValueError(f"tst.mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")


def window_tokens(mode: str, bag_size: int, seq_len: int) -> tuple[int, str]:
    """:func:`window_size` and its formula with the config keys, for messages."""
    s, L = bag_size, seq_len
    formula = {
        "full": f"tst.bag_size ({s}) x (training.seq_len ({L}) + 1)",
        "input_only": f"tst.bag_size ({s}) x training.seq_len ({L}) + 1",
        "output_only": f"training.seq_len ({L}) + tst.bag_size ({s})",
    }.get(mode)
    return window_size(mode, bag_size, seq_len), formula


@dataclass(frozen=True)
class PhaseSchedule:
    """When phase 1 ends, in steps and in samples per data-parallel rank. A run without phase 1
    (the baseline, or validation) has ``switch_step = 0`` and ``bag_size = 1``."""

    bag_size: int
    switch_step: int  # steps 1..switch_step are phase 1; 0 when there is no phase 1
    seq_len: int
    samples_per_step: int  # per data-parallel rank: local_batch_size * gradient accumulation
    dp_world_size: int
    mode: str = "full"  # tst.mode: "full", "input_only" or "output_only" (phase 1 only)

    @classmethod
    def plain(cls, seq_len: int, samples_per_step: int, dp_world_size: int) -> "PhaseSchedule":
        """Next-token samples only: the baseline, and validation."""
        return cls(bag_size=1, switch_step=0, seq_len=seq_len, samples_per_step=samples_per_step,
                   dp_world_size=dp_world_size)

    @property
    def switch_sample(self) -> int:
        """Index (per rank) of the first phase-2 sample."""
        return self.switch_step * self.samples_per_step

    def phase_of_step(self, step: int) -> int:
        """Phase of optimizer step ``step`` (1-based, as torchtitan counts)."""
        return 1 if step <= self.switch_step else 2

    def phase_of_sample(self, sample_index: int) -> int:
        return 1 if sample_index < self.switch_sample else 2

    def input_bag_size(self, phase: int) -> int:
        """Tokens averaged into one input position: s in phase 1 unless ``output_only``."""
        return self.bag_size if phase == 1 and self.mode != "output_only" else 1

    def target_bag_size(self, phase: int) -> int:
        """Targets per position: s in phase 1 unless ``input_only``."""
        return self.bag_size if phase == 1 and self.mode != "input_only" else 1

    def window(self, phase: int) -> int:
        """Tokens one sample consumes (see :func:`window_size`)."""
        return window_size(self.mode if phase == 1 else "full", self.bag_size if phase == 1 else 1, self.seq_len)

    def global_positions_per_step(self) -> int:
        return self.samples_per_step * self.dp_world_size * self.seq_len

    def raw_tokens_seen(self, step: int) -> int:
        """Input tokens read by all ranks after ``step`` steps: phase 1 reads s per position
        (``full``, ``input_only``) or one (``output_only``: its targets are the text that follows)."""
        bag_steps = min(step, self.switch_step)
        s_in = self.input_bag_size(1)
        return self.global_positions_per_step() * (s_in * bag_steps + step - bag_steps)

    def position_after(self, samples: int, n_tokens: int) -> tuple[int, int]:
        """``(cursor, epoch)`` of a rank's dataset after it served ``samples`` samples from a split
        of ``n_tokens`` tokens -- what ``TokenWindowDataset`` reaches one sample at a time:
        strides of ``window * dp_world_size`` (per rank ``s*(L+1)`` in phase 1 -- ``s*L+1`` with
        ``input_only``, ``L+s`` with ``output_only`` -- and ``L+1`` after), a new epoch (cursor 0)
        when the next stride does not fit."""
        if samples <= 0:
            return 0, 0

        def run(count: int, stride: int, cursor: int, epoch: int) -> tuple[int, int]:
            if count <= 0:
                return cursor, epoch
            per_epoch = n_tokens // stride
            if per_epoch < 1:
                raise ValueError(f"a stride of {stride} tokens does not fit {n_tokens} tokens")
            left_in_epoch = max(n_tokens - cursor, 0) // stride
            if count <= left_in_epoch:
                return cursor + count * stride, epoch
            count -= left_in_epoch  # samples drawn after wrapping
            return ((count - 1) % per_epoch + 1) * stride, epoch + 1 + (count - 1) // per_epoch

        world = self.dp_world_size
        bag_samples = min(samples, self.switch_sample)
        cursor, epoch = run(bag_samples, self.window(1) * world, 0, 0)
        return run(samples - bag_samples, self.window(2) * world, cursor, epoch)
