"""The dominant colours of the product in a photo, named the way a shopper filters (`?color=blue`).

The product is what the photo's border is not: pixels close to any colour along the border (a white
backdrop, a wooden floor, a rug) are background and left out, so a blue dress on white is "blue", not
"white". When almost nothing differs from the border (a product that fills the frame, or one the colour of
its backdrop), the photo's centre counts instead. Each remaining pixel is named by its hue,
saturation and brightness; the names that cover enough of the product are its colours, the largest first.
"""

import numpy as np
from PIL import Image

COLOR_NAMES = (
    "black",
    "white",
    "grey",
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "brown",
    "beige",
)
# Pixels looked at: plenty to tell colours apart, and a JPEG decodes at this scale in a few milliseconds.
SIDE = 64
BORDER = 2
# Border colours compared with each pixel; in 0-1 RGB, a product pixel is this far from all of them.
BORDER_SAMPLES = 128
PRODUCT_DISTANCE = 0.12
# Below this share of the picture the "product" is noise around a product the colour of the background.
LEAST_PRODUCT_SHARE = 0.03
# Hue ranges in degrees, for saturated enough pixels; the range's upper end is excluded.
HUE_NAMES = (
    (12, "red"),
    (40, "orange"),
    (70, "yellow"),
    (165, "green"),
    (255, "blue"),
    (290, "purple"),
    (340, "pink"),
    (361, "red"),
)


def _pixel_names(hsv: np.ndarray) -> np.ndarray:
    """The colour name index (into COLOR_NAMES) of each HSV pixel (Pillow's 0-255 channels)."""
    hue = hsv[:, 0] * (360.0 / 255.0)
    saturation = hsv[:, 1] / 255.0
    value = hsv[:, 2] / 255.0
    index = {name: position for position, name in enumerate(COLOR_NAMES)}
    names = np.full(len(hsv), index["grey"])
    bounds = np.array([upper for upper, _ in HUE_NAMES])
    by_hue = np.array([index[name] for _, name in HUE_NAMES])[np.searchsorted(bounds, hue, side="right")]
    coloured = saturation >= 0.2
    names[coloured] = by_hue[coloured]
    warm = (hue >= 10) & (hue < 50)
    names[coloured & warm & (value < 0.55)] = index["brown"]
    # Salmon and blush: light, soft reds a shopper calls pink.
    soft_red = ((hue < 25) | (hue >= 340)) & (saturation < 0.55) & (value >= 0.7)
    names[coloured & soft_red] = index["pink"]
    sand = (saturation >= 0.1) & (saturation < 0.4) & (hue >= 20) & (hue < 55) & (value >= 0.7)
    names[sand] = index["beige"]
    names[(saturation < 0.2) & (value >= 0.82)] = index["white"]
    names[value < 0.2] = index["black"]
    return names


def _product_mask(rgb: np.ndarray) -> np.ndarray:
    """True where a pixel belongs to the product: unlike every colour seen along the photo's border (a
    plain backdrop, or a floor's or rug's several colours). Without enough such pixels, the photo's centre."""
    border = np.concatenate(
        [
            rgb[:BORDER].reshape(-1, 3),
            rgb[-BORDER:].reshape(-1, 3),
            rgb[:, :BORDER].reshape(-1, 3),
            rgb[:, -BORDER:].reshape(-1, 3),
        ]
    )
    samples = border[:: max(1, len(border) // BORDER_SAMPLES)]
    pixels = rgb.reshape(-1, 3)
    nearest = np.min(np.linalg.norm(pixels[:, None, :] - samples[None, :, :], axis=2), axis=1)
    mask = (nearest > PRODUCT_DISTANCE).reshape(rgb.shape[:2])
    # Edge pixels blend product and backdrop (a black dress on white has grey edges): leave them out.
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    for candidate in (inner, mask):
        if candidate.mean() >= LEAST_PRODUCT_SHARE:
            return candidate
    height, width = rgb.shape[:2]
    centre = np.zeros(rgb.shape[:2], dtype=bool)
    centre[height // 4 : height - height // 4, width // 4 : width - width // 4] = True
    return centre


def photo_colors(image: Image.Image, *, most: int = 3, least_share: float = 0.12) -> list[str]:
    """The product's colour names, the largest share first: those covering least_share of it, at most
    `most`, and always at least the largest one."""
    if image.format == "JPEG":
        image.draft("RGB", (SIDE, SIDE))
    small = image.convert("RGB")
    small.thumbnail((SIDE, SIDE))
    rgb = np.asarray(small, dtype=np.float32) / 255.0
    mask = _product_mask(rgb)
    hsv = np.asarray(small.convert("HSV"), dtype=np.float32)[mask]
    counts = np.bincount(_pixel_names(hsv), minlength=len(COLOR_NAMES))
    shares = counts / counts.sum()
    order = np.argsort(-shares, kind="stable")
    kept = [COLOR_NAMES[i] for i in order[:most] if shares[i] >= least_share]
    return kept or [COLOR_NAMES[order[0]]]
