"""``hyper``: Hyper-Compression's released U = 2 scheme (lossy), with the nearest codeword found in closed form.

Per quantised tensor (the rest is kept losslessly, see :mod:`modelcodecs._lossy`): consecutive weights form pairs
p (an odd last weight is paired with the centroid's y). c is the pairs' centroid and R their largest distance from
c. In local coordinates u = p - c + (l/2, l/2) the codebook (``trajectory="lattice"``, the released one) is

    q_k = ((k * l / T^2) mod l, (k * l / T) mod l),   k = 0..n,   T = ceil(sqrt(n)),

which is the sheared lattice {(a*s + b*s/T, b*s)} with s = l/T, 0 <= a, b < T, restricted to a*T + b <= n (k =
a*T + b). Its nearest point is found without a search tree: for a candidate row b the best a is the clipped
rounding of (u_x - b*s/T) / s; when every row is complete (n + 1 >= T^2) rows floor(u_y / s) and the one above
hold the nearest point (a row further out is s farther vertically but at most s/T nearer horizontally), otherwise
the rows within three of round(u_y / s) do (no row lacks more than three points). ``trajectory="winding"`` uses
the paper's irrational winding instead, q_k = l * (frac(k / (pi + 1)), frac(k / (pi + 2))), searched exhaustively
(slow; n <= 4096).

Pairs outside the square |p - c|_inf <= l/2 fall into one of M rings of equal width between l/2 and R: ring j
scales the pair toward c by f_j = (l/2) / r_j, r_j = l/2 + j * (R - l/2) / M, so it lands in the square, is
quantised there and is scaled back by 1/f_j when decoded. With M = 0 such pairs are clipped to the square. The
stored index is k + (n + 1) * j, packed at ceil(log2((n + 1)(M + 1))) bits per pair.

Side information (in every chunk's meta, so each chunk decodes alone): l, n (``codewords``), M, the trajectory, c
and R. ``auto_l`` picks l per tensor so that a fraction ``coverage`` of the pairs lies inside the square. The
per-pair loops (statistics, search with packing, unpacking with reconstruction) are native kernels
(``native/lossy``); the decoder's arithmetic is the format's: float64, codebook from :func:`codebook`.

``device="cuda"`` (or ``auto`` when torch sees a GPU) runs the lattice encode's per-pair arithmetic (rings and
closed-form search) as torch float64 operations on the GPU, one block at a time, the same operations in the same
order as the native kernel, so the same indices; they are packed, and the restored values computed, by the native
kernels. Decoding is always native. ``cpu`` never imports torch.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from . import _lossy_kernels as _kernels
from ._lossy import LossyWeightCodec, check_positive, meta_number
from ._torch import DEVICE_CHOICES
from .abc import Param, TensorSpec
from .errors import ConfigError, CorruptArtifactError

TRAJECTORIES = ("lattice", "winding")
MAX_WINDING_N = 4096


def side_length(n: int) -> int:
    """T = ceil(sqrt(n)): points per lattice row."""
    t = math.isqrt(n)
    return t if t * t == n else t + 1


def index_bits(n: int, rings: int) -> int:
    """Bits of one stored index: ceil(log2((n + 1) * (M + 1)))."""
    return max(1, math.ceil(math.log2((n + 1) * (rings + 1))))


def lattice_points(l: float, n: int) -> np.ndarray:
    """The lattice codebook in local coordinates, row k = the codeword of index k (k = 0..n), shape (n+1, 2)."""
    # k = a T + b: x = (a s + b s / T) mod l = (a mod T) s + b s / T, y = (k s) mod l = b s (exact, no float mod)
    k = np.arange(n + 1, dtype=np.int64)
    t = side_length(n)
    s = l / t
    a, b = (k // t) % t, k % t
    return np.stack([a * s + b * (s / t), b * s], axis=1)


def winding_points(l: float, n: int) -> np.ndarray:
    """The paper's irrational winding: l * (frac(k/(pi+1)), frac(k/(pi+2))), k = 0..n."""
    k = np.arange(n + 1, dtype=np.float64)
    return l * np.stack([np.mod(k / (math.pi + 1), 1.0), np.mod(k / (math.pi + 2), 1.0)], axis=1)


@functools.lru_cache(maxsize=2)
def codebook(l: float, n: int, trajectory: str) -> np.ndarray:
    """The codebook of a tensor (read-only; its chunks share it; tensors are coded one at a time, so two are kept:
    at n = 2^24 one is 256 MB)."""
    points = lattice_points(l, n) if trajectory == "lattice" else winding_points(l, n)
    points.flags.writeable = False
    return points


def nearest_lattice(ux: np.ndarray, uy: np.ndarray, l: float, n: int) -> np.ndarray:
    """Index k of the nearest lattice codeword to each local point (u_x, u_y) in [0, l]^2 (closed form, native)."""
    out = np.empty(np.shape(ux), dtype=np.int64)
    _kernels.lattice_nearest(np.ascontiguousarray(ux, dtype=np.float64), np.ascontiguousarray(uy, dtype=np.float64),
                             l, n, out)
    return out


def encode_device(device: str) -> str:
    """Where the lattice encode runs: ``cpu`` (native kernels, torch not imported) or a CUDA device (via
    :func:`modelcodecs._torch.resolve_device`, which says clearly when none is there)."""
    if device == "cpu":
        return device
    from ._torch import resolve_device

    return resolve_device(device)


def _torch_lattice_nearest(ux, uy, l: float, n: int):
    """The native closed-form lattice search (``Lattice`` in native/lossy/lossy_core.inc) on float64 torch tensors
    of local coordinates: the same operations in the same order, so the same indices (int64 tensor). Divisors are
    0-d tensors on the device: torch turns division by a Python number into a multiplication by its reciprocal on
    CUDA, which could move a near-tie to the other codeword."""
    import torch

    t = side_length(n)
    s = l / t
    inverse, shear, top = 1.0 / s, s / t, float(t - 1)
    complete = n + 1 >= t * t
    t_divisor = torch.tensor(float(t), dtype=torch.float64, device=ux.device)

    def in_row(row):
        row = row.clamp(0.0, top)
        a = torch.round((ux - row * shear) * inverse).clamp(min=0.0)
        a = a.clamp(max=top) if complete else torch.minimum(a, torch.floor((n - row) / t_divisor).clamp(max=top))
        dx = ux - (a * s + row * shear)
        dy = uy - row * s
        return dx * dx + dy * dy, a * float(t) + row

    # the nearest codeword's index, the smaller on a tie
    def keep_nearer(best, candidate):
        (best_d, best_k), (d, k) = best, candidate
        take = (d < best_d) | ((d == best_d) & (k < best_k))
        return torch.where(take, d, best_d), torch.where(take, k, best_k)

    if complete:
        below = torch.floor(uy * inverse)
        best = keep_nearer(in_row(below), in_row(below + 1))
    else:
        centre = torch.round(uy * inverse)
        best = in_row(centre - 3)
        for offset in range(-2, 4):
            best = keep_nearer(best, in_row(centre + offset))
    return best[1].long()


def _torch_pair_indices(block: np.ndarray, side: tuple, device: str) -> np.ndarray:
    """The stored index (theta + (n + 1) * ring) of every pair of ``block`` (float32), computed by torch on
    ``device`` for the lattice trajectory: the native ``hyper_encode``'s ring scaling and search, in float64."""
    import torch

    l, n, rings, _, cx, cy, radius = side
    half = l / 2
    width = max(radius - half, 0.0) / rings if rings else 0.0

    def constant(value: float):
        return torch.tensor(value, dtype=torch.float64, device=device)

    values = torch.from_numpy(block).to(device).double()  # float32 over the bus
    px, py = values[0::2], values[1::2]
    if py.numel() < px.numel():  # an odd last value is paired with the centroid's y
        py = torch.cat([py, constant(cy).reshape(1)])
    dx, dy = px - cx, py - cy
    ring = torch.zeros_like(dx)
    if rings:
        # outside the square: ring j = clip(ceil((|d| - l/2) / width), 1, M), scaled by (l/2) / r_j
        outside = torch.maximum(dx.abs(), dy.abs()) > half
        j = torch.ceil((torch.sqrt(dx * dx + dy * dy) - half) / constant(width if width > 0 else 1.0))
        ring = torch.where(outside, j.clamp(1.0, float(rings)), ring)
    scale = constant(half) / (half + width * ring)  # exactly 1 inside the square
    ux = (dx * scale + half).clamp(0.0, l)
    uy = (dy * scale + half).clamp(0.0, l)
    theta = _torch_lattice_nearest(ux, uy, l, n)
    return (theta + (n + 1) * ring.long()).cpu().numpy().astype(np.uint32)


def _torch_quantise(block: np.ndarray, args: tuple, side: tuple, device: str, packed: np.ndarray,
                    restored: np.ndarray) -> None:
    """``_kernels.hyper_quantise`` with the indices found by torch on ``device``: packed by the native packer,
    ``restored`` written by the native decoder from the packed indices (so it is what decoding gives)."""
    _kernels.pack(_torch_pair_indices(block, side, device), args[-1], packed)
    _kernels.hyper_dequantise(packed, *args, restored)


class HyperCodec(LossyWeightCodec):
    """Hyper-Compression (U = 2, released scheme), closed-form nearest codeword, bit-packed indices (lossy)."""

    codec_id = "hyper"
    description = (
        "Lossy Hyper-Compression (released U=2 scheme): pairs of weights are replaced by the index of the nearest "
        "of n points of a sheared lattice (or the paper's irrational winding) in a square of side l around the "
        "tensor's centroid, with up to M rings for pairs outside it; indices bit-packed at "
        "ceil(log2((n+1)(M+1))) bits per pair. 1-D, integer and non-finite tensors are kept losslessly. "
        "on_delta quantises fine-tune - base instead (needs the base)."
    )
    params = (
        Param("l", float, 0.1, "side of the square around the centroid (> 0; ignored when auto_l)"),
        Param("n", int, 1600, "codewords in the square (index theta = 0..n)", minimum=4, maximum=1 << 24),
        Param("M", int, 3, "rings for pairs outside the square (0: clip them)", minimum=0, maximum=64),
        Param("auto_l", bool, False, "choose l per tensor from the data (see coverage)"),
        Param("coverage", float, 0.99, "with auto_l: fraction of pairs inside the square", minimum=0.5,
              maximum=1.0),
        Param("trajectory", str, "lattice", "codebook: the released sheared lattice (closed-form search) or the "
              "paper's irrational winding (exhaustive search, n <= 4096)", choices=TRAJECTORIES),
        Param("device", str, "cpu", "where the lattice encode runs: cpu = native kernels; cuda = torch on the GPU; "
              "auto = CUDA when torch sees one (the same indices everywhere; decoding is native)",
              choices=DEVICE_CHOICES),
    ) + LossyWeightCodec.common_params
    _unit = 2

    def __init__(self, **config):
        super().__init__(**config)
        check_positive("l", self.l)
        if self.trajectory == "winding" and self.n > MAX_WINDING_N:
            raise ConfigError(f"n: the winding trajectory is searched exhaustively; n must be <= {MAX_WINDING_N}")
        if index_bits(self.n, self.M) > 32:
            raise ConfigError("n and M: an index would need more than 32 bits")
        if self.trajectory == "winding" and self.device == "cuda":
            raise ConfigError("device: only the lattice trajectory runs on CUDA")

    @functools.cached_property
    def _encode_device(self) -> str:
        # resolved at the first encode, not in __init__: an artifact's config (device included) is rebuilt to
        # decode it, on machines with or without a GPU
        return encode_device(self.device) if self.trajectory == "lattice" else "cpu"

    # -- per tensor ---------------------------------------------------------------------------------------------
    def _tensor_side(self, values: np.ndarray, spec: TensorSpec) -> dict:
        cx, cy, radius, quantile = _kernels.pair_stats(values, self.coverage if self.auto_l else 0.0)
        l = self.l
        if self.auto_l:
            # a (nearly) constant tensor: any square holding everything will do
            l = 2.0 * quantile if quantile > 0 else 2.0 * radius or 1e-6
        return {"l": l, "codewords": self.n, "M": self.M, "trajectory": self.trajectory, "cx": cx, "cy": cy,
                "R": radius}

    @staticmethod
    def _side(meta: dict, what: str) -> tuple[float, int, int, str, float, float, float]:
        l = meta_number(meta, "l", what)
        if not l > 0:
            raise CorruptArtifactError(f"{what}: side information 'l' must be > 0")
        n = meta_number(meta, "codewords", what, integer=True, low=4, high=1 << 24)
        rings = meta_number(meta, "M", what, integer=True, low=0, high=64)
        trajectory = meta.get("trajectory")
        if trajectory not in TRAJECTORIES or (trajectory == "winding" and n > MAX_WINDING_N):
            raise CorruptArtifactError(f"{what}: side information 'trajectory' is invalid")
        cx, cy = meta_number(meta, "cx", what), meta_number(meta, "cy", what)
        radius = meta_number(meta, "R", what, low=0)
        return l, n, rings, trajectory, cx, cy, radius

    @staticmethod
    def _kernel_side(side: tuple) -> tuple:
        """The native kernels' arguments: l, n, M, lattice?, codebook, the rings' factors r_j / (l/2), c, R and
        the index width. r_0 = l/2 (inside the square: no scaling), r_j = l/2 + j (R - l/2) / M."""
        l, n, rings, trajectory, cx, cy, radius = side
        half = l / 2
        width = max(radius - half, 0.0) / rings if rings else 0.0
        growth = (half + width * np.arange(rings + 1, dtype=np.float64)) / half
        return (l, n, rings, trajectory == "lattice", codebook(l, n, trajectory), growth, cx, cy, radius,
                index_bits(n, rings))

    # -- blocks -------------------------------------------------------------------------------------------------
    def _encode_block(self, block: np.ndarray, side: dict, spec: TensorSpec, restored: np.ndarray) \
            -> tuple[bytes, dict]:
        side = self._side(side, spec.name)
        args = self._kernel_side(side)
        packed = np.empty(_kernels.packed_bytes((block.size + 1) // 2, args[-1]), dtype=np.uint8)
        if self._encode_device == "cpu":
            _kernels.hyper_quantise(block, *args, packed, restored)
        else:
            _torch_quantise(block, args, side, self._encode_device, packed, restored)
        return packed.tobytes(), {}

    def _decode_block(self, payload, meta: dict, spec: TensorSpec, what: str, out: np.ndarray) -> None:
        args = self._kernel_side(self._side(meta, what))
        try:
            _kernels.hyper_dequantise(np.frombuffer(payload, dtype=np.uint8), *args, out)
        except CorruptArtifactError as exc:
            raise CorruptArtifactError(f"{what}: {exc}") from None


__all__ = ["HyperCodec", "codebook", "encode_device", "index_bits", "lattice_points", "nearest_lattice", "side_length",
           "winding_points"]
