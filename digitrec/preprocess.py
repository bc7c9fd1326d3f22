"""A drawing or an uploaded image becomes an MNIST-style 28x28 digit.

MNIST's digits were made from scanned NIST digits in three steps (LeCun et al.,
1998): the digit's bounding box was scaled to fit a 20x20 box keeping its
aspect ratio, with anti-aliasing that turns black-and-white strokes into grey
edges; the 20x20 box was put in a 28x28 field; and the digit was moved so that
the centre of mass of its ink sits at the centre of the field. A model trained
on MNIST has only ever seen digits made like that, so a drawing must be made
the same way before the model reads it. The steps here:

1. ``ink``: greyscale, oriented so ink is bright (the canvas draws white on
   black; paper is dark on light), scaled to [0, 1];
2. ``bbox`` / ``cropped``: the bounding box of the ink, ignoring faint noise;
3. ``fitted``: scaled so its longer side is 20 px, with anti-aliasing;
4. ``final``: pasted into 28x28 and shifted by whole pixels so its centre of
   mass is at (14, 14), where real MNIST digits have theirs.

``preprocess_steps`` keeps every intermediate so the app can show how a drawing
becomes 28x28; ``to_mnist`` returns only the result.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from digitrec.data import IMAGE_SIZE
from digitrec.errors import BadImage, EmptyDrawing

# MNIST fits each digit into a 20x20 box inside the 28x28 field.
BOX_SIZE = 20
# Real MNIST digits have their centre of mass at (14.0, 14.0) on average in
# pixel-index coordinates (rows and columns 0..27; measured on the training set,
# every digit within half a pixel of it), so that is where ours go.
CENTRE = (14.0, 14.0)
# Ink below this fraction of the strongest ink is noise (JPEG ringing, paper
# grain, a scanner's grey): it neither widens the bounding box nor stays in the digit.
INK_THRESHOLD = 0.1
# An image whose ink differs from its background by less than this (on a 0..1
# scale) has no digit: a blank canvas, a uniform or nearly uniform photo.
MIN_CONTRAST = 0.1
# How the crop is scaled into the 20-box (see fit_box).
RESAMPLE = Image.Resampling.BILINEAR
# Uploads larger than this a side, or of more pixels in all, are refused before their
# pixels are decoded: a digit needs no more, and a small file can expand to gigabytes (a
# decompression bomb; an 85 KB PNG of 4096 x 4096 took 700 MB and 3 s to read).
MAX_SIDE = 4096
MAX_PIXELS = 4_000_000  # 2000 x 2000
# An image file of one digit larger than this is not one (a phone photo is 2-5 MB).
MAX_FILE_BYTES = 10 * 2**20
# A decoded upload is shrunk (keeping its aspect) so its longer side is at most this
# before any float maths: the 20 x 20 box needs far less, and the app keeps the image
# to show how it was preprocessed.
WORK_SIDE = 1024
# The image formats an upload may be in. Pillow knows many more (EPS would run
# Ghostscript); a digit comes as one of these.
UPLOAD_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
# Handwritten digits leave most of their 20 x 20 box empty: in MNIST at most 43 % of the
# 28 x 28 pixels are over 0.3 (99 % of digits stay under 27 %). Noise or a texture fills
# the whole box (about 51 %).
MAX_INK_COVERAGE = 0.45

# A mark whose longer side is under this fraction of the image's longer side is a dot or
# a slip of the mouse, not a digit: blown up to 20 px it would become a confident blob.
MIN_EXTENT = 0.1
TOO_SMALL_MESSAGE = (
    "That mark is too small to read as a digit: it covers less than a tenth of the picture. "
    "Draw the digit bigger (most of the canvas's height), or crop the image closer around it."
)
EMPTY_MESSAGE = (
    "The drawing is empty: draw a digit with the mouse (or upload an image with a dark "
    "or light digit on a plain background) and try again."
)


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays have no single truth value
class PreprocessSteps:
    """Every intermediate of turning an image into an MNIST-style digit.

    ink:    (H, W) float32 in [0, 1], the input's size; 1 is full ink, 0 background.
    bbox:   (top, left, bottom, right) of the ink in ``ink``'s pixels; bottom and
            right are exclusive, so ``ink[top:bottom, left:right]`` is ``cropped``.
    cropped: (bottom - top, right - left) float32, the ink inside its bounding box.
    fitted: (h, w) float32 with max(h, w) == 20, the crop scaled with anti-aliasing.
    boxed:  (28, 28) float32, ``fitted`` pasted in the middle of the field, before the shift.
    centre_of_mass: (row, col) of the ink in ``boxed``, in pixels (0..27).
    shift:  (dr, dc) whole pixels that ``boxed`` was moved by to make ``final``.
    final:  (28, 28) float32 tensor in [0, 1], what a model reads.
    """

    ink: np.ndarray
    bbox: tuple[int, int, int, int]
    cropped: np.ndarray
    fitted: np.ndarray
    boxed: np.ndarray
    centre_of_mass: tuple[float, float]
    shift: tuple[int, int]
    final: torch.Tensor

    @property
    def ink_coverage(self) -> float:
        """The fraction of the 28 x 28 pixels with ink over 0.3 (MNIST's digits: at most 0.43)."""
        return float((self.final > 0.3).float().mean())

    @property
    def warning(self) -> str | None:
        """A sentence when the result does not look like a handwritten digit (else None)."""
        return not_a_digit_warning(self.final)


def not_a_digit_warning(digit: torch.Tensor) -> str | None:
    """A sentence if a (28, 28) digit in [0, 1] is ink all over (noise, a texture), else None.

    The networks still answer for it; the sentence says why that answer means little.
    """
    coverage = float((digit > 0.3).float().mean())
    if coverage <= MAX_INK_COVERAGE:
        return None
    return (
        f"This does not look like a digit: ink covers {coverage * 100:.0f} % of the picture, spread over the whole "
        "frame like noise or a texture (handwritten digits leave most of it empty, under 43 % in MNIST). "
        "The networks' answers below are for it anyway; try one digit, drawn here or photographed on plain paper."
    )


def to_mnist(image: np.ndarray | Image.Image) -> torch.Tensor:
    """An image or canvas drawing -> (28, 28) float32 digit in [0, 1], MNIST-style.

    Raises EmptyDrawing when the image holds no ink, BadImage when it is not an image.
    """
    return preprocess_steps(image).final


def preprocess_steps(image: np.ndarray | Image.Image) -> PreprocessSteps:
    """Like ``to_mnist``, keeping every intermediate (see ``PreprocessSteps``).

    ``image`` is a PIL image or a numpy array: (H, W) greyscale, (H, W, 3) RGB, or
    (H, W, 4) RGBA such as streamlit-drawable-canvas's ``image_data``; uint8 0..255,
    or float in [0, 1]. Light ink on dark or dark ink on light both work: the border
    decides which is the background. Where an RGBA image is partly transparent, the
    alpha channel says where the ink is (transparent = no ink).
    """
    ink = find_ink(image)  # (H, W)

    bbox = ink_bbox(ink)
    top, left, bottom, right = bbox
    if max(bottom - top, right - left) < MIN_EXTENT * max(ink.shape):
        raise EmptyDrawing(TOO_SMALL_MESSAGE)
    cropped = ink[top:bottom, left:right]  # (h0, w0)

    fitted = fit_box(cropped)  # (h, w), longer side 20

    # Paste the 20-box in the middle of the 28x28 field, then move it by whole
    # pixels so its centre of mass lands on CENTRE, as MNIST did.
    h, w = fitted.shape
    r0, c0 = (IMAGE_SIZE - h) // 2, (IMAGE_SIZE - w) // 2
    boxed = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    boxed[r0 : r0 + h, c0 : c0 + w] = fitted
    com = centre_of_mass(boxed)
    # Round half up (not to even) so equal inputs always move the same way; clamp
    # so the whole box stays in the field (at most 8 px of slack in each axis).
    dr = int(np.clip(np.floor(CENTRE[0] - com[0] + 0.5), -r0, IMAGE_SIZE - h - r0))
    dc = int(np.clip(np.floor(CENTRE[1] - com[1] + 0.5), -c0, IMAGE_SIZE - w - c0))
    final = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    final[r0 + dr : r0 + dr + h, c0 + dc : c0 + dc + w] = fitted

    return PreprocessSteps(
        ink=ink,
        bbox=bbox,
        cropped=cropped,
        fitted=fitted,
        boxed=boxed,
        centre_of_mass=com,
        shift=(dr, dc),
        final=torch.from_numpy(final),
    )


# --- step 1: find the ink -------------------------------------------------------


def find_ink(image: np.ndarray | Image.Image) -> np.ndarray:
    """(H, W) float32 ink in [0, 1]: 1 where the strongest ink is, 0 on the background.

    Raises EmptyDrawing when nothing differs from the background.
    """
    grey = _greyscale(_as_float_array(image))  # (H, W) in [0, 1]

    # The background is what the border shows: a digit rarely covers more than
    # half of the outer frame, so the frame's median is the paper (or canvas).
    background = float(np.median(_frame(grey)))
    if background > 0.5:  # dark ink on light paper: turn it into light on dark
        grey = 1.0 - grey
        background = 1.0 - background
    strongest = float(grey.max())
    contrast = strongest - background
    if contrast < MIN_CONTRAST:
        raise EmptyDrawing(EMPTY_MESSAGE)
    # Stretch so the background is 0 and the strongest ink 1: a grey pencil on
    # grey paper reads like MNIST's full-intensity strokes.
    ink = np.clip((grey - background) / contrast, 0.0, 1.0)
    ink[ink < INK_THRESHOLD] = 0.0  # faint noise is not ink
    return ink.astype(np.float32, copy=False)


def _as_float_array(image: np.ndarray | Image.Image) -> np.ndarray:
    """Image -> float64 array in [0, 1]: (H, W), (H, W, 2) grey+alpha, (H, W, 3) or (H, W, 4)."""
    if isinstance(image, Image.Image):
        image = _pil_to_array(image)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (2, 3, 4))):
        raise BadImage(
            f"An image must be greyscale (H, W), RGB (H, W, 3) or RGBA (H, W, 4); got shape "
            f"{arr.shape}. Upload a PNG or JPEG of a single digit."
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise EmptyDrawing(EMPTY_MESSAGE)
    _check_size(arr.shape[1], arr.shape[0])

    if arr.dtype == np.uint8:
        return arr / 255.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float64)
    if arr.dtype == np.uint16:
        return arr / 65535.0
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise BadImage(
            f"Image pixels must be numbers, got {arr.dtype}. "
            "Upload a PNG or JPEG of a single digit."
        )
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    # Floats are taken as [0, 1] and other integers as 0..255, unless their values say otherwise.
    if arr.max(initial=0.0) > 1.0:
        arr = arr / 255.0
    return np.clip(arr, 0.0, 1.0)


def _greyscale(arr: np.ndarray) -> np.ndarray:
    """(H, W[, C]) in [0, 1] -> (H, W) grey in [0, 1], compositing away any transparency."""
    if arr.ndim == 2:
        return arr
    channels = arr.shape[2]
    colour, alpha = (arr[..., :-1], arr[..., -1]) if channels in (2, 4) else (arr, None)
    # ITU-R 601-2 luma, the weights PIL's convert("L") uses.
    grey = colour[..., 0] if colour.shape[2] == 1 else colour @ np.array([0.299, 0.587, 0.114])
    if alpha is None or alpha.min() >= 1.0:
        return grey  # opaque (the canvas with a background colour): alpha says nothing
    # Partly transparent: put the image on the background that contrasts with its
    # visible pixels (black under light strokes, white under dark ones). Transparent
    # pixels become background whatever colour they store, so alpha is the ink
    # coverage, and a stroke of any colour reads as ink.
    weight = alpha.sum()
    visible_grey = float((grey * alpha).sum() / weight) if weight > 0 else 0.0
    backdrop = 0.0 if visible_grey >= 0.5 else 1.0
    return grey * alpha + backdrop * (1.0 - alpha)


def _frame(grey: np.ndarray) -> np.ndarray:
    """The pixels of the outer frame of a (H, W) image, a ring 1/50 of the side thick."""
    t = max(1, min(grey.shape) // 50)
    mask = np.zeros(grey.shape, bool)
    mask[:t, :] = mask[-t:, :] = True
    mask[:, :t] = mask[:, -t:] = True
    return grey[mask]


# --- step 2: crop to the ink ----------------------------------------------------------


def ink_bbox(ink: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the pixels with ink; bottom/right are exclusive."""
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        raise EmptyDrawing(EMPTY_MESSAGE)
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


# --- step 3: fit into 20x20 ----------------------------------------------------------


def fit_box(cropped: np.ndarray, box: int = BOX_SIZE) -> np.ndarray:
    """Scale (h0, w0) ink so its longer side is ``box`` px, keeping the aspect ratio.

    PIL's BILINEAR filter widens with the reduction factor when shrinking, so each
    output pixel averages all the input pixels it covers: the anti-aliasing that
    gives MNIST its grey stroke edges (a plain bilinear sample would skip pixels
    and break thin strokes). It does not ring as LANCZOS does around hard edges.
    Returns (h, w) float32 in [0, 1] with max(h, w) == box and the strongest ink at 1.
    """
    h0, w0 = cropped.shape
    scale = box / max(h0, w0)
    h = min(box, max(1, int(np.floor(h0 * scale + 0.5))))
    w = min(box, max(1, int(np.floor(w0 * scale + 0.5))))
    img = Image.fromarray(np.ascontiguousarray(cropped, dtype=np.float32), mode="F")
    fitted = np.asarray(img.resize((w, h), RESAMPLE), dtype=np.float32)
    fitted = np.clip(fitted, 0.0, 1.0)
    # A thin stroke shrunk tenfold turns grey; MNIST's strokes have full-ink cores
    # (90 % of its digits reach 255), so the strongest ink goes back to 1.
    peak = fitted.max()
    if peak <= 0.0:
        raise EmptyDrawing(EMPTY_MESSAGE)
    return fitted / peak


# --- step 4: centre of mass ------------------------------------------------------------


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, col) of the ink-weighted mean pixel position of a (H, W) image, in pixels."""
    total = float(image.sum())
    if total <= 0.0:
        raise EmptyDrawing(EMPTY_MESSAGE)
    rows = np.arange(image.shape[0], dtype=np.float64)
    cols = np.arange(image.shape[1], dtype=np.float64)
    row = float(image.sum(axis=1) @ rows) / total
    col = float(image.sum(axis=0) @ cols) / total
    return row, col


# --- uploads and conversions -------------------------------------------------------------


def load_image(data: bytes) -> np.ndarray:
    """Decode an uploaded file (PNG, JPEG, GIF, BMP or WebP only) to a uint8 array.

    Returns (H, W) greyscale, (H, W, 3) RGB or (H, W, 4) RGBA, as the file holds
    it (an animated file gives its first frame; a photo is turned upright by its
    EXIF orientation), shrunk so its longer side is at most WORK_SIDE. Raises
    BadImage for a file that is not one of those formats, is truncated or
    corrupt, or is larger than MAX_SIDE pixels a side or MAX_PIXELS in all.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadImage(
            f"That file is not an image we can read (got {type(data).__name__}, not bytes). "
            "Upload a PNG or JPEG of a single digit."
        )
    if len(data) == 0:
        raise BadImage(
            "That file is not an image we can read (it is empty). "
            "Upload a PNG or JPEG of a single digit."
        )
    try:
        with warnings.catch_warnings():
            # Pillow only warns about a large image; we refuse it (see _check_size).
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(bytes(data)), formats=list(UPLOAD_FORMATS)) as im:
                _check_size(*im.size)  # the header alone gives the size: decode nothing yet
                if im.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale straight away
                    im.draft(im.mode, (WORK_SIDE, WORK_SIDE))
                im.load()
                im = ImageOps.exif_transpose(im)
                return _shrink(_pil_to_array(im))
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(
            f"That image is too large to read ({e}). Upload a PNG or JPEG of a single digit, "
            f"at most {MAX_SIDE} pixels a side."
        ) from e
    except Image.UnidentifiedImageError as e:
        raise BadImage(
            "That file is not an image we can read (it is not a PNG, JPEG, GIF, BMP or WebP "
            "image). Upload a PNG or JPEG of a single digit."
        ) from e
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, EOFError, ...
        reason = str(e) or type(e).__name__
        raise BadImage(
            f"That file is not an image we can read ({reason}). "
            "Upload a PNG or JPEG of a single digit."
        ) from e


def _check_size(width: int, height: int) -> None:
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise BadImage(
            f"That image is {width}x{height} pixels, larger than we read (at most {MAX_SIDE} a side "
            f"and {MAX_PIXELS / 1e6:.0f} megapixels; a digit needs far fewer). "
            "Upload a smaller PNG or JPEG of a single digit."
        )


def _shrink(arr: np.ndarray) -> np.ndarray:
    """(H, W[, C]) uint8 -> the same shrunk by a whole factor so its longer side is <= WORK_SIDE.

    Box-averaging keeps thin strokes (each output pixel is the mean of the ones it covers).
    """
    factor = -(-max(arr.shape[:2]) // WORK_SIDE)  # ceil
    if factor <= 1:
        return arr
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr)).reduce(factor))  # L, RGB or RGBA from the shape


def _pil_to_array(im: Image.Image) -> np.ndarray:
    """A PIL image -> uint8 (H, W), (H, W, 3) or (H, W, 4), keeping any transparency."""
    _check_size(*im.size)
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit or float greyscale: scale down to 0..255 by the range it uses.
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0.0) > 255 else 255.0
        if im.mode == "F" and arr.max(initial=0.0) <= 1.0:
            top = 1.0
        return np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
    if has_alpha:
        return np.asarray(im.convert("RGBA"))
    if im.mode in ("L", "1"):
        return np.asarray(im.convert("L"))
    return np.asarray(im.convert("RGB"))


def to_uint8(digit: torch.Tensor) -> torch.Tensor:
    """(28, 28) float digit in [0, 1] -> (28, 28) uint8 0..255, MNIST's storage format."""
    return (digit.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def from_uint8(digit: torch.Tensor) -> torch.Tensor:
    """(28, 28) uint8 0..255 -> (28, 28) float32 in [0, 1], the inverse of ``to_uint8``."""
    return digit.float() / 255.0
