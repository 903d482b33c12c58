"""A tiny PNG reader and writer (8-bit gray, gray+alpha, RGB, RGBA; no interlacing).

Enough for the demo's pictures without matplotlib or Pillow: ``write_png`` stores uint8
(H, W) or (H, W, 3) arrays, ``read_png`` returns (H, W) or (H, W, 3/4) uint8 arrays.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Union

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# colour type -> samples per pixel
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image of shape (H, W) (gray), (H, W, 3) (RGB) or (H, W, 4) (RGBA)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"encode_png takes uint8 pixels, got dtype {image.dtype}")
    if image.ndim == 2:
        colour = 0
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        colour = 2 if image.shape[2] == 3 else 6
    else:
        raise ValueError(f"encode_png takes (H, W), (H, W, 3) or (H, W, 4) pixels, got shape {image.shape}")
    height, width = image.shape[:2]
    if height < 1 or width < 1:
        raise ValueError(f"encode_png needs at least one pixel, got shape {image.shape}")
    rows = np.ascontiguousarray(image).reshape(height, -1)
    # Filter type 0 (none) on every row: simple, and zlib does well on synthetic pictures.
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")


def write_png(path: str, image: np.ndarray) -> None:
    """Writes a uint8 (H, W) / (H, W, 3) / (H, W, 4) image to `path` as PNG."""
    with open(path, "wb") as f:
        f.write(encode_png(image))


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a.astype(np.int16) + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c)).astype(np.uint8)


def _unfilter(data: bytes, height: int, stride: int, bpp: int) -> np.ndarray:
    rows = np.frombuffer(data, np.uint8)
    if rows.size != height * (stride + 1):
        raise ValueError(f"PNG image data holds {rows.size} bytes, expected {height * (stride + 1)}")
    rows = rows.reshape(height, stride + 1)
    out = np.zeros((height, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(height):
        kind, line = int(rows[y, 0]), rows[y, 1:].copy()
        if kind == 0:
            pass
        elif kind == 2:
            line = line + prev
        elif kind in (1, 3, 4):
            # Each byte depends on the one bpp bytes left of it: go pixel by pixel.
            for x in range(0, stride, bpp):
                left = line[x - bpp:x] if x else np.zeros(bpp, np.uint8)
                up = prev[x:x + bpp]
                if kind == 1:
                    pred = left
                elif kind == 3:
                    pred = ((left.astype(np.uint16) + up) // 2).astype(np.uint8)
                else:
                    up_left = prev[x - bpp:x] if x else np.zeros(bpp, np.uint8)
                    pred = _paeth(left, up, up_left)
                line[x:x + bpp] = line[x:x + bpp] + pred
        else:
            raise ValueError(f"PNG row {y} has filter type {kind}, expected 0 to 4")
        out[y] = line
        prev = line
    return out


def decode_png(data: bytes) -> np.ndarray:
    """uint8 pixels of an 8-bit, non-interlaced gray / gray+alpha / RGB / RGBA PNG."""
    if data[:8] != _SIGNATURE:
        raise ValueError("not a PNG file (the 8-byte signature differs)")
    pos, header, idat = 8, b"", []
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if len(header) != 13:
        raise ValueError("PNG has no valid IHDR chunk")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or colour not in _CHANNELS or interlace:
        raise ValueError(
            f"only 8-bit non-interlaced gray/RGB(A) PNGs are supported without matplotlib, got bit depth {depth}, "
            f"colour type {colour}, interlace {interlace}; install matplotlib to read this file"
        )
    channels = _CHANNELS[colour]
    pixels = _unfilter(zlib.decompress(b"".join(idat)), height, width * channels, channels)
    return pixels.reshape(height, width) if channels == 1 else pixels.reshape(height, width, channels)


def read_png(path: Union[str, os.PathLike[str]]) -> np.ndarray:
    """Reads a PNG written by :func:`write_png` (or any 8-bit gray/RGB(A) PNG)."""
    with open(path, "rb") as f:
        return decode_png(f.read())
