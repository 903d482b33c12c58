"""``cppconv demo``: the seed's figures, computed with cppconv.

* Feature maps: an RGB picture (C=3, H, W) is convolved in one ``conv2d`` call with a bank
  of K named kernels, each spanning all 3 input channels, giving K feature maps (K, H, W):
  "each kernel is leading to one feature map in the output volume".
* Sliding: a 3x3 kernel over a 5x5 input with stride 1, stride 2 and padding 1, each
  panel annotated with O = (I + 2P - K) / S + 1.

Pictures are drawn with matplotlib when it is installed (titles, colour maps); otherwise
with the built-in PNG writer (:mod:`cppconv._png`): the same data, no text.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import _png
from ._conv import conv2d, conv_output_size

SAMPLE_IMAGE = "sample.png"  # in python/cppconv/data/, shipped in the wheel

# Luminance weights: a kernel bank entry spans all three channels, weighted as the eye does,
# so an edge between two colours of equal brightness is (correctly) weak.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def kernel_bank() -> Dict[str, np.ndarray]:
    """Named 2-D kernels (float32): edge, Sobel, corner, Laplacian, blur, sharpen, emboss."""
    d = np.array([-1.0, 0.0, 1.0], np.float32)
    smooth = np.array([1.0, 2.0, 1.0], np.float32)
    gauss = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]).astype(np.float32)
    return {
        "horizontal edge": np.array([[1, 1, 1], [0, 0, 0], [-1, -1, -1]], np.float32),
        "vertical edge": np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], np.float32),
        "Sobel x": np.outer(smooth, d),
        "Sobel y": np.outer(d, smooth),
        # The mixed derivative d2/dxdy: zero on flat areas and straight edges, strong at corners.
        "corner": np.outer(d, d),
        "Laplacian": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32),
        "Gaussian blur 5x5": gauss / gauss.sum(),
        "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32),
        "emboss": np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], np.float32),
    }


def weight_volume(kernels: Dict[str, np.ndarray], channels: int = 3) -> np.ndarray:
    """(K, channels, k, k) weights: each named kernel spans every input channel (luma-weighted).

    Kernels smaller than the largest are zero-padded around their centre, so one conv2d call
    with ``padding="same"`` applies the whole bank.
    """
    size = max(k.shape[0] for k in kernels.values())
    mix = _LUMA if channels == 3 else np.full(channels, 1.0 / channels, np.float32)
    bank = np.zeros((len(kernels), channels, size, size), np.float32)
    for i, k in enumerate(kernels.values()):
        off = (size - k.shape[0]) // 2
        bank[i, :, off:off + k.shape[0], off:off + k.shape[1]] = mix[:, None, None] * k
    return bank


def synthetic_scene(size: int = 128) -> np.ndarray:
    """The sample picture: (size, size, 3) uint8 shapes with straight edges, corners and a curve."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.empty((size, size, 3), np.float32)
    img[..., 0] = 0.55 + 0.25 * yy  # a soft sky-to-ground gradient: no edges of its own
    img[..., 1] = 0.70 + 0.10 * yy
    img[..., 2] = 0.90 - 0.30 * yy

    def fill(mask: np.ndarray, rgb: Tuple[float, float, float]) -> None:
        img[mask] = rgb

    fill((xx > 0.08) & (xx < 0.45) & (yy > 0.10) & (yy < 0.42), (0.85, 0.15, 0.12))   # red rectangle
    fill((xx - 0.72) ** 2 + (yy - 0.28) ** 2 < 0.17 ** 2, (0.15, 0.25, 0.80))          # blue disc
    fill((yy > 0.55) & (yy < 0.92) & (np.abs(xx - 0.28) < (yy - 0.55) * 0.55), (0.10, 0.60, 0.20))  # triangle
    square = (xx > 0.58) & (xx < 0.92) & (yy > 0.58) & (yy < 0.92)
    inner = (xx > 0.64) & (xx < 0.86) & (yy > 0.64) & (yy < 0.86)
    fill(square & ~inner, (0.95, 0.80, 0.10))                                         # yellow frame
    checker = inner & (((xx * 16).astype(int) + (yy * 16).astype(int)) % 2 == 0)
    fill(checker, (0.10, 0.10, 0.10))                                                 # checkerboard
    return np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)


def sample_image_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", SAMPLE_IMAGE)


def load_image(path: Optional[str]) -> np.ndarray:
    """(H, W, 3) uint8 pixels of `path`, or of the shipped sample picture when `path` is None."""
    path = sample_image_path() if path is None else path
    if path.lower().endswith(".png"):
        try:
            image = _png.read_png(path)
        except ValueError:
            image = _read_with_matplotlib(path)
    else:
        image = _read_with_matplotlib(path)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def _read_with_matplotlib(path: str) -> np.ndarray:
    if not _has_matplotlib():
        raise ValueError(f"cannot read {path!r} without matplotlib: give an 8-bit PNG, or pip install matplotlib")
    import matplotlib.image

    data = matplotlib.image.imread(path)
    if data.dtype != np.uint8:
        data = np.round(np.clip(data, 0, 1) * 255).astype(np.uint8)
    return np.asarray(data)


def _has_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def feature_maps(image: np.ndarray, kernels: Dict[str, np.ndarray]) -> np.ndarray:
    """(K, H, W) float32: one conv2d call of the (3, H, W) picture with the whole bank.

    "same" padding keeps the picture's size; replicated borders (rather than zeros) keep the
    frame of the picture from showing up as an edge in every map.
    """
    volume = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0
    return conv2d(volume, weight_volume(kernels, volume.shape[0]), padding="same", padding_mode="replicate")


def to_gray(fmap: np.ndarray) -> np.ndarray:
    """uint8 display of a feature map: signed maps around mid-grey, non-negative ones 0..255."""
    lo, hi = float(fmap.min()), float(fmap.max())
    if lo < 0:
        scale = max(-lo, hi, 1e-12)
        return np.round(127.5 + 127.5 * fmap / scale).astype(np.uint8)
    return np.round(255 * (fmap - lo) / max(hi - lo, 1e-12)).astype(np.uint8)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def _grid_without_matplotlib(image: np.ndarray, maps: np.ndarray, columns: int = 5, gap: int = 6) -> np.ndarray:
    tiles = [image] + [np.repeat(to_gray(m)[..., None], 3, axis=2) for m in maps]
    h, w = image.shape[:2]
    rows = -(-len(tiles) // columns)
    canvas = np.full((rows * (h + gap) + gap, columns * (w + gap) + gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        canvas[gap + r * (h + gap):gap + r * (h + gap) + h, gap + c * (w + gap):gap + c * (w + gap) + w] = tile
    return canvas


def _grid_with_matplotlib(path: str, image: np.ndarray, maps: np.ndarray, names: List[str], columns: int = 5) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-(len(names) + 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows))
    flat = list(np.atleast_1d(axes).ravel())
    flat[0].imshow(image)
    flat[0].set_title(f"input (3, {image.shape[0]}, {image.shape[1]})", fontsize=9)
    for ax, fmap, name in zip(flat[1:], maps, names):
        signed = fmap.min() < 0
        lim = float(np.abs(fmap).max()) or 1.0
        ax.imshow(fmap, cmap="RdBu_r" if signed else "gray", vmin=-lim if signed else None,
                  vmax=lim if signed else None)
        ax.set_title(name, fontsize=9)
    for ax in flat:
        ax.axis("off")
    fig.suptitle(f"{len(names)} kernels, each spanning all 3 channels -> {len(names)} feature maps "
                 f"(conv2d output {tuple(maps.shape)})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# The seed's three cases: (title, stride, padding) of a 3x3 kernel over a 5x5 input.
SLIDING_CASES = [("stride 1, no padding", 1, 0), ("stride 2, no padding", 2, 0), ("stride 1, padding 1", 1, 1)]


def sliding_outputs() -> List[Tuple[str, int, int, int, np.ndarray]]:
    """(title, stride, padding, O from the formula, conv2d's output) for each case."""
    x = np.arange(1, 26, dtype=np.float32).reshape(5, 5)
    k = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.float32)
    cases = []
    for title, stride, padding in SLIDING_CASES:
        size = conv_output_size(5, 3, stride=stride, padding=padding)
        y = conv2d(x, k, stride=stride, padding=padding)
        assert y.shape == (size, size), (y.shape, size)  # the library agrees with the formula
        cases.append((title, stride, padding, size, y))
    return cases


def _sliding_with_matplotlib(path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    cases = sliding_outputs()
    fig, axes = plt.subplots(1, len(cases), figsize=(5.2 * len(cases), 4.4))
    for ax, (title, stride, padding, size, y) in zip(axes, cases):
        n = 5 + 2 * padding
        for r in range(n):
            for c in range(n):
                pad = not (padding <= r < n - padding and padding <= c < n - padding)
                ax.add_patch(Rectangle((c, -r - 1), 1, 1, facecolor="#eeeeee" if pad else "#cfe3f7",
                                       edgecolor="#777777", lw=0.8))
                value = 0 if pad else (r - padding) * 5 + (c - padding) + 1
                ax.text(c + 0.5, -r - 0.5, str(value), ha="center", va="center", fontsize=7,
                        color="#999999" if pad else "black")
        # The kernel's first position (filled) and its next one along the row (dashed), `stride` apart.
        ax.add_patch(Rectangle((0, -3), 3, 3, facecolor="#f7d154", alpha=0.55, edgecolor="#b58900", lw=2))
        ax.add_patch(Rectangle((stride, -3), 3, 3, fill=False, edgecolor="#b58900", lw=2, ls="--"))
        ox = n + 1.5
        for r in range(size):
            for c in range(size):
                first = r == 0 and c == 0
                ax.add_patch(Rectangle((ox + c, -r - 1), 1, 1, facecolor="#f7d154" if first else "#d9f2d9",
                                       edgecolor="#777777", lw=0.8))
                ax.text(ox + c + 0.5, -r - 0.5, f"{y[r, c]:g}", ha="center", va="center", fontsize=7)
        ax.annotate("", xy=(ox - 0.2, -1.5), xytext=(n + 0.2, -1.5), arrowprops=dict(arrowstyle="->"))
        ax.set_title(f"{title}\nO = (I + 2P - K) / S + 1 = (5 + 2*{padding} - 3) / {stride} + 1 = {size}",
                     fontsize=10)
        ax.set_xlim(-0.5, ox + size + 0.5)
        ax.set_ylim(-max(n, size) - 0.5, 0.5)
        ax.set_aspect("equal")
        ax.axis("off")
    fig.suptitle("A 3x3 kernel (cross of ones) sliding over a 5x5 input: input (blue, padding grey) -> output",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _sliding_without_matplotlib(cell: int = 14) -> np.ndarray:
    """The same panels as pixel blocks: input cells, padding, the kernel's first window, output."""
    cases = sliding_outputs()
    gap = cell
    panels = []
    for _, _stride, padding, size, _ in cases:
        n = 5 + 2 * padding
        width = (n + 1 + size) * cell
        panel = np.full((7 * cell, width, 3), 255, np.uint8)
        for r in range(n):
            for c in range(n):
                pad = not (padding <= r < n - padding and padding <= c < n - padding)
                colour = (238, 238, 238) if pad else (207, 227, 247)
                if r < 3 and c < 3:
                    colour = (247, 209, 84)
                panel[r * cell + 1:(r + 1) * cell - 1, c * cell + 1:(c + 1) * cell - 1] = colour
        ox = (n + 1) * cell
        for r in range(size):
            for c in range(size):
                colour = (247, 209, 84) if r == c == 0 else (217, 242, 217)
                panel[r * cell + 1:(r + 1) * cell - 1, ox + c * cell + 1:ox + (c + 1) * cell - 1] = colour
        panels.append(panel)
        panels.append(np.full((7 * cell, gap, 3), 255, np.uint8))
    return np.concatenate(panels[:-1], axis=1)


def run_demo(image_path: Optional[str], output_dir: str, use_matplotlib: bool = True) -> List[str]:
    """Writes the demo's pictures under `output_dir`; returns their paths.

    ``feature_maps.png`` (input and every map), ``feature_<name>.png`` (one per kernel, 8-bit
    gray: mid-grey is zero for signed maps), ``sliding.png`` (the stride/padding figure).
    """
    os.makedirs(output_dir, exist_ok=True)
    image = load_image(image_path)
    kernels = kernel_bank()
    names = list(kernels)
    maps = feature_maps(image, kernels)
    with_mpl = use_matplotlib and _has_matplotlib()
    written = []

    grid = os.path.join(output_dir, "feature_maps.png")
    if with_mpl:
        _grid_with_matplotlib(grid, image, maps, names)
    else:
        _png.write_png(grid, _grid_without_matplotlib(image, maps))
    written.append(grid)
    for name, fmap in zip(names, maps):
        path = os.path.join(output_dir, f"feature_{_slug(name)}.png")
        _png.write_png(path, to_gray(fmap))
        written.append(path)

    sliding = os.path.join(output_dir, "sliding.png")
    if with_mpl:
        _sliding_with_matplotlib(sliding)
    else:
        _png.write_png(sliding, _sliding_without_matplotlib())
    written.append(sliding)
    return written
