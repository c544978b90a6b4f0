"""Resume-faithful training: a resumed run replays the uninterrupted one bit for bit, from any checkpoint.

Two things break that in plain Trainer, both fixed here.

1. The length-grouped sampler draws each epoch's order from the global RNG.

Trainer's `LengthGroupedSampler` permutes with the global torch RNG at the start of each epoch, so the order
of epoch 2 depends on every random draw made during epoch 1 (dropout, ...). A run resumed in epoch 2 restores
the RNG as saved at its checkpoint, not as it stood at the epoch boundary of the uninterrupted run, and sees
another order. Seeding a private generator per epoch makes the order a function of (seed, epoch) alone, so
any resume point replays it exactly; it also leaves the global RNG (dropout) untouched by sampling.
Whether length grouping is the default is decided elsewhere (training defaults); this only makes it resumable.

2. Evaluation moves the global RNG (each DataLoader iterator draws a seed from it), so an evaluation between a
checkpoint and the next training step (the epoch-end evaluation after a step checkpoint) shifts all later
dropout masks of the uninterrupted run but not of a run resumed from that checkpoint. Evaluating on a forked
RNG makes the training RNG stream independent of when and how often evaluation runs.
"""

from __future__ import annotations

import torch
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Trainer before each epoch, also the one a resume starts in."""
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)  # distinct per (seed, epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class ResumableTrainer(Trainer):
    """Trainer whose data order and random stream survive a resume at any step."""

    def evaluate(self, *args, **kwargs):
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            return super().evaluate(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:  # exactly Trainer's own, so a deliberate choice is left alone
            return EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, self.args.seed)
        return sampler
