"""A 64-bit perceptual hash of a product photo (pHash: signs of the low DCT frequencies of a 32x32 grey copy),
so a re-encoded, resized or slightly cropped copy of a photo is found by few differing bits.

Hand-written in numpy rather than `imagehash`, which pulls SciPy and PyWavelets into the web process for one
8x8 DCT; bench/duplicates.py measures it on clothing-small. Mirrored copies are found by hashing the new
photo and its mirror image and keeping the nearer of the two (catalog.services.duplicates).
"""

import numpy as np
from PIL import Image, ImageOps

HASH_BITS = 64
_SIDE = 32
_LOW = 8
_k = np.arange(_SIDE)
# The DCT-II basis: _DCT @ pixels @ _DCT.T is the 2-D transform (scale does not matter for signs).
_DCT = np.cos(np.pi * (2 * _k[None, :] + 1) * _k[:, None] / (2 * _SIDE))


def photo_hash(image: Image.Image) -> int:
    """The photo's pHash as a signed 64-bit integer (fits a BigIntegerField)."""
    grey = np.asarray(image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT @ grey @ _DCT.T)[:_LOW, :_LOW].ravel()
    # The median leaves out the constant term, which only says how bright the photo is.
    bits = np.packbits(low > np.median(low[1:]))
    return int(np.frombuffer(bits.tobytes(), dtype=">i8")[0])


def photo_hashes(image: Image.Image) -> tuple[int, int]:
    """(the photo's hash, its mirror image's hash)."""
    return photo_hash(image), photo_hash(ImageOps.mirror(image))


def hash_distances(query: int, hashes: np.ndarray) -> np.ndarray:
    """How many of the 64 bits differ between `query` and each of `hashes` (int64 array)."""
    return np.bitwise_count(np.asarray(hashes, dtype=np.int64) ^ np.int64(query)).astype(np.int64)
