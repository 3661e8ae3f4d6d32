"""Content and perceptual hashes of images, self-contained so `data inspect` can share them.

`content_hash` names exact copies: identical encoded bytes (files) or identical pixels (arrays).
`phash_bits` is imagehash's pHash (Zauner 2010, as `imagehash.phash` computes it: grey, 32×32
Lanczos, 2-D DCT, the 8×8 lowest frequencies above their median), but as one vectorised DCT over
a batch of thumbnails instead of one Python call per image; tests hold it to `imagehash.phash`.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image
from scipy import fftpack

HASH_SIZE = 8  # bits per side: 64-bit hashes
PHASH_SIDE = HASH_SIZE * 4  # imagehash's highfreq_factor 4


def content_hash(data: bytes | np.ndarray) -> str:
    """SHA-256 of encoded bytes, or of a decoded array's shape and pixels (hex, 32 characters)."""
    digest = hashlib.sha256()
    if isinstance(data, np.ndarray):
        digest.update(str(data.shape).encode())
        digest.update(np.ascontiguousarray(data).tobytes())
    else:
        digest.update(data)
    return digest.hexdigest()[:32]


def grey_thumbnail(image: Image.Image, side: int = PHASH_SIDE) -> np.ndarray:
    """The (side, side) uint8 grey image pHash starts from (convert, then Lanczos resize)."""
    return np.asarray(image.convert("L").resize((side, side), Image.Resampling.LANCZOS), dtype=np.uint8)


def phash_bits(thumbnails: np.ndarray) -> np.ndarray:
    """(N, 32, 32) grey thumbnails → (N, 8) uint8: each row the 64 pHash bits, packed row-major
    (the bit order of `imagehash.ImageHash.hash.flatten()`)."""
    pixels = thumbnails.astype(np.float64)
    dct = fftpack.dct(fftpack.dct(pixels, axis=1), axis=2)
    low = dct[:, :HASH_SIZE, :HASH_SIZE].reshape(len(pixels), -1)
    bits = low > np.median(low, axis=1, keepdims=True)
    return np.packbits(bits, axis=1)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise distance between packed hashes (rows of uint8), broadcasting like numpy."""
    return np.unpackbits(np.bitwise_xor(a, b), axis=-1).sum(-1)
