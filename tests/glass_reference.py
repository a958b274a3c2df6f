"""A literal port of the reference ``glass_blur`` of Hendrycks & Dietterich's ``make_cifar_c.py``
(and ``make_imagenet_c.py``: the same loop over a 224 px image), for tests and benchmarks.

Only the image size is read from the array (the scripts hard-code 32 and 224), and
scikit-image's ``gaussian(x, sigma, multichannel=True)`` is written with SciPy (it is
``ndimage.gaussian_filter`` with edge-replicating borders, truncate 4, no blur across
channels). The swap statement is kept verbatim on an (H, W, 3) NumPy array, so it has the
reference's view-aliasing behaviour.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from scipy import ndimage


def skimage_gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """``skimage.filters.gaussian(image, sigma, multichannel=True)`` of a float (H, W, 3) array."""
    return ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0), mode="nearest", truncate=4.0)


def reference_glass_blur(image: np.ndarray, params: tuple[float, int, int],
                         draw: Callable[[int], tuple[int, int]]) -> np.ndarray:
    """The reference on one uint8 (H, W, 3) image; ``draw(δ)`` returns ``(dx, dy)`` in [−δ, δ)."""
    sigma, delta, iterations = params
    x = np.uint8(skimage_gaussian(np.array(image) / 255.0, sigma) * 255)
    x = shuffle_loop(x, delta, iterations, draw)
    return np.clip(skimage_gaussian(x / 255.0, sigma), 0, 1) * 255


def shuffle_loop(x: np.ndarray, delta: int, iterations: int, draw: Callable[[int], tuple[int, int]]) -> np.ndarray:
    """The reference's "locally shuffle pixels" loop, in place on an (H, W, C) array."""
    height, width = x.shape[:2]
    for _ in range(iterations):
        for h in range(height - delta, delta, -1):
            for w in range(width - delta, delta, -1):
                dx, dy = draw(delta)
                h_prime, w_prime = h + dy, w + dx
                # swap (verbatim)
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return x


def numpy_draws(rng: np.random.RandomState) -> Callable[[int], tuple[int, int]]:
    """The reference's own draws: ``dx, dy = np.random.randint(-δ, δ, size=(2,))``."""
    def draw(delta: int) -> tuple[int, int]:
        dx, dy = rng.randint(-delta, delta, size=(2,))
        return int(dx), int(dy)
    return draw


def replayed_draws(offsets: np.ndarray) -> Callable[[int], tuple[int, int]]:
    """Replays one image's (iterations, rows, cols, 2) ``(dy, dx)`` offsets in visit order."""
    flat: Iterator[np.ndarray] = iter(offsets.reshape(-1, 2))

    def draw(delta: int) -> tuple[int, int]:
        dy, dx = next(flat)
        return int(dx), int(dy)
    return draw
