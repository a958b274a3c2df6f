"""Corruptions against independent computations: PIL, colorsys, SciPy, closed forms and
literal ports of the reference loops (Hendrycks & Dietterich's scripts, ImageMagick)."""
from __future__ import annotations

import colorsys
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from robusteval.data.corruptions import corrupt
from robusteval.data.corruptions.blur import disk_kernel, glass_permutation
from robusteval.data.corruptions.kernels import bilinear_sample, motion_blur
from robusteval.data.corruptions.params import CIFAR, IMAGENET
from robusteval.data.corruptions.textures import frost_texture, plasma_fractal
from robusteval.data.corruptions.weather import frost_stack
from glass_reference import reference_glass_blur, replayed_draws, shuffle_loop
from test_corruptions import scenes

X = scenes(8, 32)
GREY = torch.full((8, 3, 32, 32), 0.5)
SEVERITIES = range(1, 6)


def uint8_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return (scenes(n, size, seed) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def as_batch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_and_speckle_residual_std(severity: int) -> None:
    sigma = CIFAR["gaussian_noise"][severity - 1]
    residual = corrupt(GREY, "gaussian_noise", severity, seed=severity) - GREY  # no clipping at 0.5 ± 5σ
    assert float(residual.std()) == pytest.approx(sigma, rel=0.02)
    assert float(residual.mean()) == pytest.approx(0.0, abs=0.002)
    speckle = CIFAR["speckle_noise"][severity - 1]
    relative = (corrupt(GREY, "speckle_noise", severity, seed=severity) - GREY) / GREY
    assert float(relative.std()) == pytest.approx(speckle, rel=0.02)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_shot_noise_is_poisson(severity: int) -> None:
    photons = CIFAR["shot_noise"][severity - 1]
    counts = corrupt(GREY, "shot_noise", severity, seed=severity).double() * photons
    assert torch.allclose(counts, counts.round(), atol=1e-3 * photons)  # whole photon counts
    rate = 0.5 * photons  # Poisson: mean = variance = rate
    assert float(counts.mean()) == pytest.approx(rate, rel=0.01)
    assert float(counts.var()) == pytest.approx(rate, rel=0.05)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_impulse_noise_fraction(severity: int) -> None:
    amount = CIFAR["impulse_noise"][severity - 1]
    out = corrupt(GREY, "impulse_noise", severity, seed=severity)
    hit = out != 0.5
    assert bool(((out[hit] == 0) | (out[hit] == 1)).all())
    n = hit.numel()
    assert float(hit.float().mean()) == pytest.approx(amount, abs=4 * math.sqrt(amount * (1 - amount) / n))
    assert float((out[hit] == 1).float().mean()) == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / int(hit.sum())))


@pytest.mark.parametrize("severity", SEVERITIES)
def test_contrast_closed_form(severity: int) -> None:
    c = CIFAR["contrast"][severity - 1]
    x = X.double().numpy()
    means = x.mean(axis=(2, 3), keepdims=True)
    expected = np.clip((x - means) * c + means, 0, 1)
    np.testing.assert_allclose(corrupt(X, "contrast", severity, seed=0).numpy(), expected, atol=1e-6)


def hsv_reference(x: torch.Tensor, edit) -> np.ndarray:
    """Per-pixel colorsys round trip with ``edit(h, s, v) -> (h, s, v)``."""
    pixels = x.permute(0, 2, 3, 1).reshape(-1, 3).double().tolist()
    out = [colorsys.hsv_to_rgb(*edit(*colorsys.rgb_to_hsv(*p))) for p in pixels]
    return np.clip(np.array(out), 0, 1).reshape(x.shape[0], x.shape[2], x.shape[3], 3).transpose(0, 3, 1, 2)


def colour_test_batch() -> torch.Tensor:
    x = X[:2].clone()
    x[0, :, :4, :4] = 0.0  # black
    x[0, :, 4:8, :4] = 0.6  # grey
    x[1, :, :4, :4] = 1.0  # white
    return x


@pytest.mark.parametrize("severity", SEVERITIES)
def test_brightness_and_saturate_match_colorsys(severity: int) -> None:
    x = colour_test_batch()
    shift = CIFAR["brightness"][severity - 1]
    expected = hsv_reference(x, lambda h, s, v: (h, s, min(v + shift, 1.0)))
    np.testing.assert_allclose(corrupt(x, "brightness", severity, seed=0).numpy(), expected, atol=1e-5)
    factor, offset = CIFAR["saturate"][severity - 1]  # offsets > 0 turn grey pixels red (hue 0), as in skimage
    expected = hsv_reference(x, lambda h, s, v: (h, min(max(s * factor + offset, 0.0), 1.0), v))
    np.testing.assert_allclose(corrupt(x, "saturate", severity, seed=0).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("size", [32, 224])
def test_jpeg_matches_pil(size: int) -> None:
    images = uint8_images(2, size)
    table = CIFAR if size == 32 else IMAGENET
    for severity in SEVERITIES:
        expected = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "JPEG", quality=table["jpeg_compression"][severity - 1])
            expected.append(np.asarray(Image.open(buffer)))
        out = corrupt(as_batch(images), "jpeg_compression", severity, seed=0)
        assert torch.equal((out * 255).round().to(torch.uint8), as_batch(np.stack(expected)).mul(255).round().byte())


@pytest.mark.parametrize("size", [32, 224])
def test_pixelate_matches_pil_box(size: int) -> None:
    images = uint8_images(2, size)
    table = CIFAR if size == 32 else IMAGENET
    for severity in SEVERITIES:
        small = int(size * table["pixelate"][severity - 1])
        expected = np.stack([
            np.asarray(Image.fromarray(im).resize((small, small), Image.BOX).resize((size, size), Image.BOX))
            for im in images
        ])
        out = corrupt(as_batch(images), "pixelate", severity, seed=0) * 255
        # PIL rounds to uint8 after each of its four 1-D passes; at most one level apart
        assert float((out - as_batch(expected) * 255).abs().max()) <= 1.0 + 1e-4


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_blur_matches_scipy(severity: int) -> None:
    sigma = CIFAR["gaussian_blur"][severity - 1]
    expected = ndimage.gaussian_filter(X.double().numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)
    np.testing.assert_allclose(corrupt(X, "gaussian_blur", severity, seed=0).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("table", [CIFAR, IMAGENET])
def test_defocus_disk_and_filter(table: dict) -> None:
    """The reference disk: normalised, blurred by cv2.GaussianBlur (REFLECT_101); filter2D with REFLECT_101."""
    for radius, alias in table["defocus_blur"]:
        span, ksize = (8, 3) if radius <= 8 else (radius, 5)
        grid = np.arange(-span, span + 1)
        disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).astype(np.float64)
        taps = np.exp(-((np.arange(ksize) - (ksize - 1) / 2) ** 2) / (2 * alias**2))
        kernel = disk / disk.sum()
        for axis in (0, 1):
            kernel = ndimage.correlate1d(kernel, taps / taps.sum(), axis=axis, mode="mirror")
        trimmed = disk_kernel(radius, alias).numpy()
        pad = (kernel.shape[0] - trimmed.shape[0]) // 2
        np.testing.assert_allclose(np.pad(trimmed, pad), kernel, atol=1e-12)
    for severity in (1, 4):
        radius, alias = CIFAR["defocus_blur"][severity - 1]
        kernel = disk_kernel(radius, alias).numpy()
        expected = ndimage.correlate(X.double().numpy(), kernel[None, None], mode="mirror")
        out = corrupt(X, "defocus_blur", severity, seed=0).numpy()
        np.testing.assert_allclose(out, np.clip(expected, 0, 1), atol=1e-6)


def clipped_zoom(img: np.ndarray, factor: float) -> np.ndarray:
    """The reference's ``clipped_zoom`` of an (H, W) array."""
    h = img.shape[0]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    img = ndimage.zoom(img[top : top + ch, top : top + ch], (factor, factor), order=1)
    trim = (img.shape[0] - h) // 2
    return img[trim : trim + h, trim : trim + h]


@pytest.mark.parametrize("severity", [1, 5])
def test_zoom_blur_matches_scipy_zoom(severity: int) -> None:
    x = X[:2].double().numpy()
    factors = np.arange(*CIFAR["zoom_blur"][severity - 1])
    expected = x.copy()
    for factor in factors:
        expected += np.stack([[clipped_zoom(channel, factor) for channel in image] for image in x])
    expected /= len(factors) + 1
    np.testing.assert_allclose(corrupt(X[:2], "zoom_blur", severity, seed=0).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize(("delta", "height", "width"), [(1, 12, 12), (2, 14, 11), (4, 20, 17)])
def test_glass_permutation_equals_the_reference_loop(delta: int, height: int, width: int) -> None:
    """The reference's tuple "swap" on (H, W, 3) views copies; every visit sees earlier ones."""
    g = torch.Generator().manual_seed(delta)
    offsets = torch.randint(-delta, delta, (2, 3, height - 2 * delta, width - 2 * delta, 2), generator=g)
    source = glass_permutation(offsets, height, width, delta)
    for n in range(3):
        pixels = np.repeat(np.arange(height * width).reshape(height, width, 1), 3, axis=2)
        expected = shuffle_loop(pixels, delta, 2, replayed_draws(offsets[:, n].numpy()))
        np.testing.assert_array_equal(source[n].reshape(height, width).numpy(), expected[..., 0])
    assert len(set(source[0].tolist())) < height * width  # copies duplicate pixels: not a permutation


@pytest.mark.parametrize(("size", "table", "severity"), [(32, CIFAR, s) for s in SEVERITIES] + [(224, IMAGENET, 5)])
def test_glass_blur_equals_the_literal_reference_for_the_same_offsets(size: int, table: dict, severity: int) -> None:
    params = table["glass_blur"][severity - 1]
    sigma, delta, iterations = params
    images = uint8_images(2, size, seed=severity)
    seed = 11 * severity
    offsets = torch.randint(-delta, delta, (iterations, 2, size - 2 * delta, size - 2 * delta, 2),
                            generator=torch.Generator().manual_seed(seed))
    out = corrupt(as_batch(images), "glass_blur", severity, seed=seed).permute(0, 2, 3, 1).double().numpy() * 255
    for n in range(2):
        expected = reference_glass_blur(images[n], params, replayed_draws(offsets[:, n].numpy()))
        # The uint8 truncation of a blurred flat region (exactly v) lands on v or v−1 by float
        # rounding noise (0.02% of values at σ = 0.4), here and in the reference alike; the second
        # blur spreads each flip over its neighbours. Elsewhere the values agree.
        diff = np.abs(out[n] - expected)
        assert diff.max() <= 1.0 + 1e-3
        assert (diff > 1e-3).mean() < 0.03


def test_motion_blur_matches_imagemagick_loop() -> None:
    """Per-pixel port of ImageMagick's MotionBlurImage with edge virtual pixels."""
    x = X[:2, :, :20, :20].double()
    angles = torch.tensor([-38.0, 27.5], dtype=torch.float64)
    radius, sigma = 6, 2.0
    width = 2 * radius + 1
    kernel = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    kernel /= kernel.sum()
    out = motion_blur(x, radius, sigma, angles).numpy()
    for n, angle in enumerate(angles.tolist()):
        px, py = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
        offsets = [(math.ceil(i * py / math.hypot(px, py) - 0.5), math.ceil(i * px / math.hypot(px, py) - 0.5))
                   for i in range(width)]
        expected = np.zeros((3, 20, 20))
        for row in range(20):
            for col in range(20):
                for weight, (ox, oy) in zip(kernel, offsets):
                    r, c = min(max(row + oy, 0), 19), min(max(col + ox, 0), 19)  # edge virtual pixels
                    expected[:, row, col] += weight * x[n, :, r, c].numpy()
        np.testing.assert_allclose(out[n], expected, atol=1e-12)


def test_plasma_fractal_matches_reference_port() -> None:
    """The reference's diamond-square loop, fed the same uniform draws."""
    mapsize, decay = 32, 2.5
    ours = plasma_fractal(2, mapsize, decay, torch.Generator().manual_seed(3)).numpy()
    g = torch.Generator().manual_seed(3)
    grid = np.zeros((2, mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def wibbled(a: np.ndarray) -> np.ndarray:
        return a / 4 + wibble * (torch.rand(a.shape, generator=g, dtype=torch.float64).numpy() * 2 * wibble - wibble)

    while step >= 2:
        corner = grid[:, 0:mapsize:step, 0:mapsize:step]
        acc = corner + np.roll(corner, -1, axis=1)
        acc += np.roll(acc, -1, axis=2)
        grid[:, step // 2 : mapsize : step, step // 2 : mapsize : step] = wibbled(acc)
        dr = grid[:, step // 2 : mapsize : step, step // 2 : mapsize : step]
        ul = grid[:, 0:mapsize:step, 0:mapsize:step]
        left = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2)
        grid[:, 0:mapsize:step, step // 2 : mapsize : step] = wibbled(left)
        top = dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1)
        grid[:, step // 2 : mapsize : step, 0:mapsize:step] = wibbled(top)
        step //= 2
        wibble /= decay
    grid -= grid.min(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(ours, grid / grid.max(axis=(1, 2), keepdims=True), atol=1e-12)


@pytest.mark.parametrize("mode", ["reflect", "mirror"])
def test_bilinear_sample_matches_map_coordinates(mode: str) -> None:
    x = X[:2].double()
    g = torch.Generator().manual_seed(0)
    rows = torch.rand(2, 32, 32, generator=g, dtype=torch.float64) * 50 - 9
    cols = torch.rand(2, 32, 32, generator=g, dtype=torch.float64) * 50 - 9
    out = bilinear_sample(x, rows, cols, mode).numpy()
    for n in range(2):
        for c in range(3):
            expected = ndimage.map_coordinates(x[n, c].numpy(), [rows[n].numpy(), cols[n].numpy()], order=1, mode=mode)
            np.testing.assert_allclose(out[n, c], expected, atol=1e-10)


def test_frost_is_weighted_sum_with_a_texture_crop() -> None:
    texture = frost_texture(0)
    assert texture.shape == (3, 512, 512) and float(texture.min()) >= 0 and float(texture.max()) <= 1
    assert float(texture[2].mean()) > float(texture[0].mean())  # pale blue
    assert torch.equal(texture, frost_texture.__wrapped__(0))  # regenerated identically
    black = torch.zeros(2, 3, 32, 32)
    image_weight, frost_weight, scale = CIFAR["frost"][4]
    crop = corrupt(black, "frost", 5, seed=4).double() / frost_weight
    stack = frost_stack(scale, 33, 33).double()  # (5, 3, 102, 102): the reference's 0.2 resize
    for image in crop:  # some texture window, exactly: find where its corner pixel fits, then compare all
        corner = (stack[:, :, :-32, :-32] - image[None, :, :1, :1]).abs().amax(dim=1) < 1e-5
        matches = [(stack[t, :, r : r + 32, c : c + 32] - image).abs().max() for t, r, c in corner.nonzero().tolist()]
        assert matches and float(min(matches)) < 1e-5
    white = torch.ones(1, 3, 32, 32)
    assert float(corrupt(white, "frost", 1, seed=0).min()) >= CIFAR["frost"][0][0] - 1e-6


def _write_frost_photos(folder, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Tiny stand-ins in the reference's layout (frost1.png … frost6.jpg); returns the RGB arrays."""
    rng = np.random.default_rng(0)
    arrays = []
    for name, (h, w) in zip(("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg"), sizes):
        array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / name, quality=100)
        arrays.append(np.array(Image.open(folder / name).convert("RGB")))
    return arrays


def test_frost_reads_the_reference_photographs(tmp_path) -> None:
    """With ``frost_dir`` every crop is a window of one of frost1..frost5 resized by 0.2 (never frost6)."""
    sizes = [(200, 210), (190, 200), (180, 220), (205, 195), (215, 185), (200, 200)]
    arrays = _write_frost_photos(tmp_path, sizes)
    resized = [torch.nn.functional.interpolate(torch.from_numpy(a / 255.0).permute(2, 0, 1)[None],
                                               size=(round(a.shape[0] * 0.2), round(a.shape[1] * 0.2)),
                                               mode="bilinear", align_corners=False)[0] for a in arrays[:5]]
    black = torch.zeros(6, 3, 32, 32)
    crops = corrupt(black, "frost", 5, seed=3, frost_dir=str(tmp_path)).double() / CIFAR["frost"][4][1]
    for crop in crops:
        best = min(float((t[:, r:r + 32, c:c + 32] - crop).abs().max())
                   for t in resized for r in range(t.shape[1] - 32) for c in range(t.shape[2] - 32))
        assert best < 1e-5
    procedural = corrupt(black, "frost", 5, seed=3)
    assert not torch.allclose(procedural, crops.float() * CIFAR["frost"][4][1])


def test_frost_dir_errors_are_one_line(tmp_path) -> None:
    from robusteval.config import CorruptionSettings
    from robusteval.errors import RobustEvalError

    with pytest.raises(RobustEvalError, match="is not a folder"):
        CorruptionSettings(frost_dir=str(tmp_path / "missing"))
    _write_frost_photos(tmp_path, [(200, 200)] * 3)
    with pytest.raises(RobustEvalError, match=r"frost4\.jpg does not exist"):
        corrupt(torch.zeros(1, 3, 32, 32), "frost", 1, seed=0, frost_dir=str(tmp_path))
    _write_frost_photos(tmp_path, [(200, 200)] * 4 + [(100, 100)])
    with pytest.raises(RobustEvalError, match=r"frost5\.jpg is 20x20 px after the 0\.2 resize"):
        corrupt(torch.zeros(1, 3, 32, 32), "frost", 1, seed=0, frost_dir=str(tmp_path))
    (tmp_path / "frost5.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(RobustEvalError, match=r"cannot read .*frost5\.jpg"):
        corrupt(torch.zeros(1, 3, 32, 32), "frost", 1, seed=0, frost_dir=str(tmp_path))
