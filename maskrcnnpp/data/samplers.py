"""A training sampler that draws images by their pixel area (every pixel the same chance by default)."""

import itertools
from typing import Iterator, Sequence

import torch
from detectron2.utils import comm
from torch.utils.data.sampler import Sampler

__all__ = ["PixelAreaTrainingSampler"]


class PixelAreaTrainingSampler(Sampler):
    """
    An endless stream of dataset indices drawn with replacement, image ``i`` with probability
    ``area_i ** power / sum(area ** power)`` (``area = height * width``). With ``power = 1`` a
    model trained on fixed-size patches sees every pixel of the training set equally often,
    whatever the image sizes: with DSB2018's 330 training images, the eight 1024x1024
    brightfield images hold 2.4 % of the images but 17 % of the pixels, and get 17 % of the
    patches instead of 2.4 %. ``power = 0`` draws every image equally often (Detectron2's
    ``TrainingSampler``, with replacement); values between share the patches between the two.

    Like Detectron2's ``TrainingSampler``, each process of a distributed run takes every
    ``world_size``-th index of the same seeded stream.
    """

    def __init__(self, areas: Sequence[float], *, power: float = 1.0, seed: int = None):
        """
        Args:
            areas (list[float]): pixel area of each dataset item, all > 0.
            power (float): exponent applied to the areas, >= 0.
            seed (int): seed of the stream, shared by all processes (default: a random
                seed agreed through ``comm.shared_random_seed``).
        """
        areas = torch.as_tensor(list(areas), dtype=torch.float64)
        if areas.numel() == 0 or not bool((areas > 0).all()):
            raise ValueError("PixelAreaTrainingSampler: every item needs an area > 0.")
        if not power >= 0:
            raise ValueError(
                f"PixelAreaTrainingSampler: power (DATALOADER.PIXEL_AREA_POWER) must be >= 0, got {power!r}."
            )
        weights = areas**power
        self._weights = weights / weights.sum()
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()

    @classmethod
    def from_dataset_dicts(cls, dataset_dicts, *, power: float = 1.0, seed: int = None):
        """Areas from each dict's ``height`` and ``width`` (KeyError naming the file if absent)."""
        areas = []
        for record in dataset_dicts:
            if "height" not in record or "width" not in record:
                raise KeyError(
                    f"PixelAreaTrainingSampler: dataset record {record.get('file_name')!r} has no "
                    "'height' / 'width'."
                )
            areas.append(record["height"] * record["width"])
        return cls(areas, power=power, seed=seed)

    def __iter__(self) -> Iterator[int]:
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self._seed)
        while True:
            yield from torch.multinomial(
                self._weights, 4096, replacement=True, generator=generator
            ).tolist()
