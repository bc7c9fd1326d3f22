"""Drawings and uploads become MNIST-style 28x28 digits (crop, fit 20x20, centre of mass)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from digitrec import preprocess as P
from digitrec.errors import BadImage, DigitrecError, EmptyDrawing


def canvas(grey: np.ndarray) -> np.ndarray:
    """(H, W) uint8 ink -> what streamlit-drawable-canvas returns: RGBA, white on opaque black."""
    rgba = np.empty(grey.shape + (4,), np.uint8)
    rgba[..., :3] = grey[..., None]
    rgba[..., 3] = 255
    return rgba


def bar(top: int, left: int, height: int, width: int, size: int = 280) -> np.ndarray:
    """(size, size) uint8: a solid white rectangle on black."""
    g = np.zeros((size, size), np.uint8)
    g[top : top + height, left : left + width] = 255
    return g


def seven(size: int = 280) -> np.ndarray:
    """(size, size) uint8: a 7 drawn with a round, anti-aliased 20 px pen."""
    im = Image.new("L", (size * 4, size * 4), 0)
    draw = ImageDraw.Draw(im)
    pts = [(70 * 4, 60 * 4), (200 * 4, 55 * 4), (120 * 4, 230 * 4)]
    draw.line(pts, fill=255, width=80, joint="curve")
    for x, y in (pts[0], pts[-1]):
        draw.ellipse((x - 40, y - 40, x + 40, y + 40), fill=255)
    return np.asarray(im.resize((size, size), Image.Resampling.BOX))


def ink_span(digit: torch.Tensor, axis: int) -> int:
    """How many rows (axis=1) or columns (axis=0) hold any ink."""
    idx = torch.nonzero(digit.gt(0).any(dim=axis)).flatten()
    return int(idx[-1] - idx[0] + 1)


def png_bytes(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


# --- geometry: crop, fit 20x20, centre of mass ----------------------------------------


def test_off_centre_bar_is_cropped_scaled_to_20_and_centred_exactly():
    # A 100 x 20 bar in the top-left corner. By hand: the crop is 100 x 20, the
    # scale 20/100 makes it 20 x 4 of full ink; pasted in the middle of 28 x 28 it
    # spans rows 4..23, cols 12..15, centre of mass (13.5, 13.5); rounding
    # 14 - 13.5 = 0.5 up shifts it by (1, 1): rows 5..24, cols 13..16.
    steps = P.preprocess_steps(canvas(bar(10, 20, 100, 20)))
    assert steps.bbox == (10, 20, 110, 40)
    assert steps.cropped.shape == (100, 20)
    assert steps.fitted.shape == (20, 4)
    assert steps.centre_of_mass == pytest.approx((13.5, 13.5))
    assert steps.shift == (1, 1)
    expected = torch.zeros(28, 28)
    expected[5:25, 13:17] = 1.0
    torch.testing.assert_close(steps.final, expected, atol=1e-5, rtol=0)


def test_where_the_digit_was_drawn_does_not_matter():
    top_left = P.to_mnist(canvas(bar(10, 20, 100, 20)))
    bottom_right = P.to_mnist(canvas(bar(170, 250, 100, 20)))
    torch.testing.assert_close(top_left, bottom_right)


def test_a_drawn_stroke_comes_out_20_tall_with_its_centre_of_mass_at_14():
    # A small 7 squeezed into the top-left corner (about 88 x 73 canvas px).
    small = np.asarray(Image.fromarray(seven()).resize((100, 100), Image.Resampling.BOX))
    grey = np.zeros((280, 280), np.uint8)
    grey[5:105, 8:108] = small
    digit = P.to_mnist(canvas(grey))
    assert 20 <= ink_span(digit, axis=1) <= 21  # rows: 20, plus at most 1 px of anti-alias fringe
    assert ink_span(digit, axis=0) <= 21
    row, col = P.centre_of_mass(digit.numpy())
    assert abs(row - 14.0) <= 0.5 and abs(col - 14.0) <= 0.5


def test_wide_short_stroke_becomes_20_wide_keeping_its_aspect_ratio():
    # 30 x 150 px: scale 20/150 gives 4 x 20; centred by hand at rows 13..16, cols 5..24.
    steps = P.preprocess_steps(canvas(bar(200, 60, 30, 150)))
    assert steps.fitted.shape == (4, 20)
    expected = torch.zeros(28, 28)
    expected[13:17, 5:25] = 1.0
    torch.testing.assert_close(steps.final, expected, atol=1e-5, rtol=0)
    # A 35 x 150 bar is 4.67 x 20 once scaled: the box is whole pixels, 5 x 20.
    digit = P.to_mnist(canvas(bar(200, 60, 35, 150)))
    assert ink_span(digit, axis=0) == 20
    assert ink_span(digit, axis=1) == 5
    # A tall thin one the other way round: 150 x 12 -> 20 x 1.6 -> 20 x 2.
    steps = P.preprocess_steps(canvas(bar(20, 200, 150, 12)))
    assert steps.fitted.shape == (20, 2)


def test_steps_fit_together():
    steps = P.preprocess_steps(canvas(seven()))
    top, left, bottom, right = steps.bbox
    np.testing.assert_array_equal(steps.cropped, steps.ink[top:bottom, left:right])
    assert max(steps.fitted.shape) == 20
    assert steps.ink.shape == (280, 280) and steps.boxed.shape == (28, 28)
    # Moving by (dr, dc) moves the centre of mass by exactly (dr, dc).
    row, col = P.centre_of_mass(steps.final.numpy())
    assert row == pytest.approx(steps.centre_of_mass[0] + steps.shift[0], abs=1e-4)
    assert col == pytest.approx(steps.centre_of_mass[1] + steps.shift[1], abs=1e-4)
    torch.testing.assert_close(P.to_mnist(canvas(seven())), steps.final)
    with pytest.raises(AttributeError):  # frozen
        steps.shift = (0, 0)  # type: ignore[misc]


def test_faint_noise_neither_widens_the_box_nor_stays():
    clean = canvas(seven())
    noisy = clean.copy()
    noisy[270, 270, :3] = 20  # a speck at 8 % of full ink, far from the digit
    noisy[3, 5, :3] = 15
    assert P.preprocess_steps(noisy).bbox == P.preprocess_steps(clean).bbox
    torch.testing.assert_close(P.to_mnist(noisy), P.to_mnist(clean))


# --- finding the ink in different kinds of image ---------------------------------------


def test_dark_on_light_gives_the_same_digit_as_light_on_dark():
    light_on_dark = P.to_mnist(canvas(seven()))
    black_on_white_rgb = np.repeat((255 - seven())[..., None], 3, axis=2)
    torch.testing.assert_close(P.to_mnist(black_on_white_rgb), light_on_dark, atol=1e-5, rtol=0)
    # Greyscale arrays and PIL images of either polarity too.
    torch.testing.assert_close(P.to_mnist(255 - seven()), light_on_dark, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        P.to_mnist(Image.fromarray(255 - seven())), light_on_dark, atol=1e-5, rtol=0
    )


def test_grey_pencil_on_grey_paper_is_stretched_to_full_ink():
    # Ink at grey 60 on paper at grey 200: the stretch maps paper to 0 and the
    # darkest ink to 1, so it matches the clean drawing up to uint8 rounding.
    v = seven().astype(np.float64)
    paper = np.round(200 - v * 140 / 255).astype(np.uint8)
    digit = P.to_mnist(np.repeat(paper[..., None], 3, axis=2))
    assert float(digit.max()) == pytest.approx(1.0)
    assert float((digit - P.to_mnist(canvas(seven()))).abs().max()) < 0.02


def test_transparent_background_with_coloured_strokes():
    coverage = seven()
    expected = P.to_mnist(canvas(coverage))
    for colour in [(255, 0, 0), (0, 0, 180), (255, 230, 0), (255, 255, 255)]:
        rgba = np.zeros((280, 280, 4), np.uint8)
        rgba[..., :3] = colour
        rgba[..., 3] = coverage  # the alpha channel is where the ink is
        torch.testing.assert_close(P.to_mnist(rgba), expected, atol=1e-5, rtol=0, msg=str(colour))
    # Transparent pixels that store white (as many editors save them) are still background.
    rgba = np.full((280, 280, 4), 255, np.uint8)
    rgba[..., :3] = np.where(coverage[..., None] > 0, np.array([20, 20, 20], np.uint8), 255)
    rgba[..., 3] = coverage
    torch.testing.assert_close(P.to_mnist(rgba), expected, atol=1e-5, rtol=0)
    # The same as a PIL RGBA image.
    torch.testing.assert_close(P.to_mnist(Image.fromarray(rgba)), expected, atol=1e-5, rtol=0)


def test_float_images_in_0_1_are_read_like_uint8():
    torch.testing.assert_close(
        P.to_mnist(seven().astype(np.float32) / 255), P.to_mnist(seven()), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((280, 280, 4), np.uint8),  # the canvas before any drawing, transparent
        canvas(np.zeros((280, 280), np.uint8)),  # the canvas before any drawing, black
        np.full((100, 120, 3), 255, np.uint8),  # white paper
        np.full((50, 50), 128, np.uint8),  # uniform grey
        np.clip(230 + np.random.default_rng(0).normal(0, 3, (200, 200)), 0, 255).astype(np.uint8),
    ],
    ids=["transparent", "black-canvas", "white", "grey", "noisy-paper"],
)
def test_no_ink_raises_empty_drawing(image):
    with pytest.raises(EmptyDrawing, match="The drawing is empty"):
        P.to_mnist(image)


def test_empty_drawing_is_a_user_error():
    assert issubclass(EmptyDrawing, DigitrecError) and issubclass(BadImage, DigitrecError)


def test_unsupported_array_shape_raises_bad_image():
    with pytest.raises(BadImage):
        P.to_mnist(np.zeros((28, 28, 5), np.uint8))


@pytest.mark.parametrize(
    "image",
    [
        canvas(seven()),
        seven().astype(np.float64) / 255,
        Image.fromarray(255 - seven()).convert("RGB"),
    ],
    ids=["canvas", "float", "pil-rgb"],
)
def test_output_is_28x28_float32_in_0_1(image):
    digit = P.to_mnist(image)
    assert digit.shape == (28, 28)
    assert digit.dtype == torch.float32
    assert float(digit.min()) >= 0.0 and float(digit.max()) == pytest.approx(1.0)


def test_to_uint8_and_back():
    digit = P.to_mnist(canvas(seven()))
    u = P.to_uint8(digit)
    assert u.dtype == torch.uint8 and u.shape == (28, 28)
    assert float((P.from_uint8(u) - digit).abs().max()) <= 0.5 / 255 + 1e-6
    torch.testing.assert_close(
        P.to_uint8(torch.tensor([-0.5, 0.0, 0.2, 1.0, 3.0])),
        torch.tensor([0, 0, 51, 255, 255], dtype=torch.uint8),
    )
    every = torch.arange(256, dtype=torch.uint8)
    torch.testing.assert_close(P.to_uint8(P.from_uint8(every)), every)


# --- uploads ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(40, 30), (40, 30, 3), (40, 30, 4)], ids=["L", "RGB", "RGBA"])
def test_png_round_trips_through_load_image(shape):
    arr = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(P.load_image(png_bytes(arr)), arr)


def test_uploaded_jpeg_and_gif_become_the_same_digit():
    expected = P.to_mnist(canvas(seven()))
    paper = np.repeat((255 - seven())[..., None], 3, axis=2)
    for fmt in ("JPEG", "GIF", "BMP"):
        digit = P.to_mnist(P.load_image(png_bytes(paper, fmt)))
        assert float((digit - expected).abs().mean()) < 0.01, fmt


@pytest.mark.parametrize(
    "data",
    [
        b"not a png",
        b"",
        png_bytes(np.zeros((64, 64), np.uint8))[:60],  # a truncated PNG
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,  # a PNG signature and garbage
    ],
    ids=["text", "empty", "truncated", "garbage-png"],
)
def test_corrupt_files_raise_bad_image(data):
    with pytest.raises(BadImage, match="not an image we can read.*Upload a PNG or JPEG"):
        P.load_image(data)


def test_truncated_image_data_raises_bad_image():
    # The header is intact, the pixel data cut short: Pillow fails only when decoding.
    full = png_bytes(np.random.default_rng(2).integers(0, 256, (200, 200), dtype=np.uint8))
    with pytest.raises(BadImage, match="Upload a PNG or JPEG"):
        P.load_image(full[: len(full) // 2])


def test_huge_images_are_refused_before_decoding():
    data = png_bytes(np.zeros((10, 5000), np.uint8))  # a small file, 5000 px wide
    with pytest.raises(BadImage, match="4096"):
        P.load_image(data)
    # Only the header is read: with its pixel data cut off, the size is still what refuses it.
    with pytest.raises(BadImage, match="4096"):
        P.load_image(data[:60])
    with pytest.raises(BadImage, match="4096"):  # arrays too
        P.to_mnist(np.zeros((5000, 10), np.uint8))


# --- real MNIST digits survive the trip -------------------------------------------------


def test_mnist_digits_drawn_large_come_back_as_themselves(mnist):
    # Each of 100 test digits, upsampled x10 to a 280 x 280 "drawing", goes
    # through to_mnist. MNIST was made by the same steps, so it should come back
    # close to itself: measured mean |difference| 0.032 per pixel, where moving
    # a digit by one pixel alone makes 0.06. And among the 100 originals, each
    # result's nearest is its own original.
    originals = mnist.test.images[:100]  # (100, 28, 28) uint8
    big = [
        Image.fromarray(d.numpy()).resize((280, 280), Image.Resampling.BILINEAR) for d in originals
    ]
    back = torch.stack([P.to_mnist(np.asarray(b)) for b in big])  # (100, 28, 28)
    orig = P.from_uint8(originals)
    diff = float((back - orig).abs().mean())
    one_pixel_shift = float((torch.roll(orig, 1, dims=2) - orig).abs().mean())
    assert diff < 0.045
    assert diff < 0.75 * one_pixel_shift
    nearest = torch.cdist(back.reshape(100, -1), orig.reshape(100, -1)).argmin(dim=1)
    assert int((nearest == torch.arange(100)).sum()) >= 98
    for d in back:
        row, col = P.centre_of_mass(d.numpy())
        assert abs(row - 14.0) <= 0.5 and abs(col - 14.0) <= 0.5


def test_a_stray_dot_is_refused_as_too_small_not_blown_up_into_a_digit():
    grey = np.zeros((280, 280), np.uint8)
    grey[10:34, 240:264] = 255  # one 24 px dab of the pen in a corner
    with pytest.raises(EmptyDrawing, match="too small to read as a digit"):
        P.to_mnist(canvas(grey))
    grey[40:240, 120:150] = 255  # now with a real stroke beside it: read as usual
    assert P.to_mnist(canvas(grey)).max() == 1.0


# --- hostile uploads (issue 12) ---------------------------------------------------------


def test_only_png_jpeg_gif_bmp_and_webp_are_opened():
    # An EPS file (Pillow would hand it to Ghostscript) and a TIFF are refused without being decoded.
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nshowpage\n"
    tiff = png_bytes(np.full((28, 28), 200, np.uint8), "TIFF")
    for data in (eps, tiff):
        with pytest.raises(BadImage, match="not a PNG, JPEG, GIF, BMP or WebP"):
            P.load_image(data)
    webp = png_bytes(np.repeat((255 - seven())[..., None], 3, axis=2), "WEBP")
    assert P.to_mnist(P.load_image(webp)).max() == 1.0


def test_big_uploads_are_refused_by_pixel_count_and_the_rest_shrunk_early():
    # 4096 x 4096 (an 85 KB PNG that took 700 MB to read): more than MAX_PIXELS, refused from its header.
    with pytest.raises(BadImage, match="megapixels"):
        P.load_image(png_bytes(np.zeros((4096, 4096), np.uint8)))
    assert P.MAX_PIXELS <= 4_000_000
    # 1900 x 1900 is allowed, and comes back shrunk so later float maths stays small.
    big = np.asarray(Image.fromarray(seven()).resize((1900, 1900)))
    image = P.load_image(png_bytes(big))
    assert max(image.shape) <= P.WORK_SIDE
    digit = P.to_mnist(image)
    assert float((digit - P.to_mnist(canvas(seven()))).abs().mean()) < 0.02  # still the same 7


def test_reading_an_allowed_big_upload_uses_bounded_memory():
    import tracemalloc

    data = png_bytes(np.asarray(Image.fromarray(seven()).resize((1990, 1990))))
    tracemalloc.start()
    try:
        P.to_mnist(P.load_image(data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * 2**20, f"{peak / 2**20:.0f} MiB"  # float64 copies of the full image took 120+ MiB


@pytest.mark.parametrize("kind", ["uniform", "salt-and-pepper", "gaussian"])
def test_pure_noise_is_read_but_said_not_to_look_like_a_digit(kind):
    rng = np.random.default_rng(0)
    noise = {
        "uniform": rng.integers(0, 256, (280, 280), dtype=np.uint8),
        "salt-and-pepper": (rng.random((280, 280)) > 0.5).astype(np.uint8) * 255,
        "gaussian": np.clip(rng.normal(128, 40, (280, 280)), 0, 255).astype(np.uint8),
    }[kind]
    steps = P.preprocess_steps(P.load_image(png_bytes(noise)))
    assert steps.final.shape == (28, 28)  # still a digit the networks can read
    assert steps.warning is not None and "does not look like a digit" in steps.warning


def test_real_digits_are_never_said_not_to_look_like_one(mnist):
    digits = P.from_uint8(mnist.train.images)  # (60000, 28, 28)
    coverage = (digits > 0.3).float().mean(dim=(1, 2))
    assert float(coverage.max()) < P.MAX_INK_COVERAGE
    assert P.preprocess_steps(canvas(seven())).warning is None
