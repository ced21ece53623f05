"""``hyper``: Hyper-Compression's released U = 2 scheme (lossy), with the nearest codeword found in closed form.

Per quantised tensor (the rest is kept losslessly, see :mod:`modelcodecs._lossy`): consecutive weights form pairs
p (an odd last weight is paired with the centroid's y). c is the pairs' centroid and R their largest distance from
c. In local coordinates u = p - c + (l/2, l/2) the codebook (``trajectory="lattice"``, the released one) is

    q_k = ((k * l / T^2) mod l, (k * l / T) mod l),   k = 0..n,   T = ceil(sqrt(n)),

which is the sheared lattice {(a*s + b*s/T, b*s)} with s = l/T, 0 <= a, b < T, restricted to a*T + b <= n (k =
a*T + b). Its nearest point is found without a search tree: for a candidate row b the best a is the clipped
rounding of (u_x - b*s/T) / s, and only the rows next to round(u_y / s) can hold the nearest point (one row either
side when every row is complete, i.e. n + 1 >= T^2; three when the last column is partly missing, since then no
row lacks more than three points). ``trajectory="winding"`` uses the paper's irrational winding instead,
q_k = l * (frac(k / (pi + 1)), frac(k / (pi + 2))), searched exhaustively block by block (slow; n <= 4096).

Pairs outside the square |p - c|_inf <= l/2 fall into one of M rings of equal width between l/2 and R: ring j
scales the pair toward c by f_j = (l/2) / r_j, r_j = l/2 + j * (R - l/2) / M, so it lands in the square, is
quantised there and is scaled back by 1/f_j when decoded. With M = 0 such pairs are clipped to the square. The
stored index is k + (n + 1) * j, packed at ceil(log2((n + 1)(M + 1))) bits per pair.

Side information (in every chunk's meta, so each chunk decodes alone): l, n (``codewords``), M, the trajectory, c and R. ``auto_l``
picks l per tensor so that a fraction ``coverage`` of the pairs lies inside the square.
"""

from __future__ import annotations

import math

import numpy as np

from ._lossy import LossyWeightCodec, check_positive, meta_number, pack_bits, unpack_bits
from .abc import Param, TensorSpec
from .errors import ConfigError, CorruptArtifactError

TRAJECTORIES = ("lattice", "winding")
MAX_WINDING_N = 4096
_WINDING_BLOCK = 2048


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


def nearest_lattice(ux: np.ndarray, uy: np.ndarray, l: float, n: int) -> np.ndarray:
    """Index k of the nearest lattice codeword to each local point (u_x, u_y) in [0, l]^2 (closed form)."""
    t = side_length(n)
    s = l / t
    reach = 1 if n + 1 >= t * t else 3
    centre_row = np.rint(uy / s)
    best_d = np.full(ux.shape, np.inf)
    best_k = np.zeros(ux.shape, dtype=np.int64)
    for offset in range(-reach, reach + 1):
        b = np.clip(centre_row + offset, 0, t - 1)
        last = np.minimum(t - 1, (n - b) // t)
        a = np.clip(np.rint((ux - b * (s / t)) / s), 0, last)
        dx = ux - (a * s + b * (s / t))
        dy = uy - b * s
        d = dx * dx + dy * dy
        k = (a * t + b).astype(np.int64)
        better = (d < best_d) | ((d == best_d) & (k < best_k))
        best_d = np.where(better, d, best_d)
        best_k = np.where(better, k, best_k)
    return best_k


def nearest_brute(ux: np.ndarray, uy: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Index of the nearest of ``points`` (first on ties), block by block (exhaustive search)."""
    out = np.empty(ux.shape, dtype=np.int64)
    for a in range(0, ux.size, _WINDING_BLOCK):
        dx = ux[a:a + _WINDING_BLOCK, None] - points[None, :, 0]
        dy = uy[a:a + _WINDING_BLOCK, None] - points[None, :, 1]
        out[a:a + _WINDING_BLOCK] = np.argmin(dx * dx + dy * dy, axis=1)
    return out


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
    ) + LossyWeightCodec.common_params
    _unit = 2

    def __init__(self, **config):
        super().__init__(**config)
        check_positive("l", self.l)
        if self.trajectory == "winding" and self.n > MAX_WINDING_N:
            raise ConfigError(f"n: the winding trajectory is searched exhaustively; n must be <= {MAX_WINDING_N}")
        if index_bits(self.n, self.M) > 32:
            raise ConfigError("n and M: an index would need more than 32 bits")

    # -- per tensor ---------------------------------------------------------------------------------------------
    def _tensor_side(self, values: np.ndarray, spec: TensorSpec) -> dict:
        x, y = self._pairs(values, None)
        cx, cy = float(x.mean(dtype=np.float64)), float(y.mean(dtype=np.float64))
        dx, dy = x - cx, y - cy
        radius = float(np.sqrt((dx * dx + dy * dy).max()))
        l = self.l
        if self.auto_l:
            inf_norm = np.maximum(np.abs(dx), np.abs(dy))
            l = 2.0 * float(np.quantile(inf_norm, self.coverage))
            if not l > 0:  # (nearly) constant tensor: any square holding everything will do
                l = 2.0 * float(inf_norm.max()) or 1e-6
        return {"l": l, "codewords": self.n, "M": self.M, "trajectory": self.trajectory, "cx": cx, "cy": cy,
                "R": radius}

    @staticmethod
    def _pairs(values: np.ndarray, cy: float | None) -> tuple[np.ndarray, np.ndarray]:
        v = values.astype(np.float64)
        if v.size % 2:
            v = np.append(v, v[-1] if cy is None else cy)
        return v[0::2], v[1::2]

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
    def _ring_radii(l: float, rings: int, radius: float) -> np.ndarray:
        """r_0 = l/2 (inside the square: no scaling), r_j = l/2 + j (R - l/2) / M."""
        half = l / 2
        width = max(radius - half, 0.0) / rings if rings else 0.0
        return half + width * np.arange(rings + 1, dtype=np.float64)

    # -- blocks -------------------------------------------------------------------------------------------------
    def _encode_block(self, block: np.ndarray, side: dict, spec: TensorSpec) -> tuple[bytes, dict]:
        l, n, rings, trajectory, cx, cy, radius = self._side(side, spec.name)
        x, y = self._pairs(block, cy)
        dx, dy = x - cx, y - cy
        half = l / 2
        ring = np.zeros(x.shape, dtype=np.int64)
        if rings:
            outside = np.maximum(np.abs(dx), np.abs(dy)) > half
            if outside.any():
                width = max(radius - half, 0.0) / rings
                dist = np.sqrt(dx * dx + dy * dy)
                j = np.ceil((dist - half) / width) if width > 0 else np.ones_like(dist)
                ring = np.where(outside, np.clip(j, 1, rings), 0).astype(np.int64)
                scale = half / self._ring_radii(l, rings, radius)[ring]
                dx, dy = dx * scale, dy * scale
        ux = np.clip(dx + half, 0.0, l)
        uy = np.clip(dy + half, 0.0, l)
        if trajectory == "lattice":
            theta = nearest_lattice(ux, uy, l, n)
        else:
            theta = nearest_brute(ux, uy, winding_points(l, n))
        index = theta + (n + 1) * ring
        return pack_bits(index, index_bits(n, rings)), {}

    def _decode_block(self, payload, meta: dict, count: int, spec: TensorSpec, what: str) -> np.ndarray:
        l, n, rings, trajectory, cx, cy, radius = self._side(meta, what)
        pairs = (count + 1) // 2
        index = unpack_bits(payload, pairs, index_bits(n, rings), what)
        if pairs and int(index.max()) >= (n + 1) * (rings + 1):
            raise CorruptArtifactError(f"{what}: an index is out of range for n={n}, M={rings}")
        theta = index % (n + 1)
        ring = index // (n + 1)
        points = lattice_points(l, n) if trajectory == "lattice" else winding_points(l, n)
        half = l / 2
        grow = self._ring_radii(l, rings, radius)[ring] / half
        x = cx + (points[theta, 0] - half) * grow
        y = cy + (points[theta, 1] - half) * grow
        out = np.empty(pairs * 2, dtype=np.float32)
        out[0::2], out[1::2] = x, y
        return out[:count]


__all__ = ["HyperCodec", "index_bits", "lattice_points", "nearest_brute", "nearest_lattice", "side_length",
           "winding_points"]
