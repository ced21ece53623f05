# cython: language_level=3
"""Thin Cython face over the lossy codec kernels (native/lossy/lossy.cpp), used by ``modelcodecs._lossy``,
``modelcodecs.rtn`` and ``modelcodecs.hyper``.

Every size is checked here while holding the GIL; the GIL is released only around the C++ call. Inputs are
contiguous float32/float64 buffers used in place (no copies).
"""

from libc.stdint cimport int64_t, uint8_t, uint32_t
from libcpp cimport bool as cbool

from .errors import CorruptArtifactError

cdef extern from "lossy.h" namespace "lossy":
    cdef struct HyperSide:
        double l, cx, cy, radius
        uint32_t n
        int rings
        cbool lattice
        const double* points
        const double* grow
        int width
    size_t packed_size(size_t count, int width) nogil
    void pack_bits(const uint32_t* values, size_t count, int width, uint8_t* out) nogil
    void unpack_bits(const uint8_t* packed, size_t count, int width, uint32_t* out) nogil
    void rtn_encode(const float* x, size_t count, size_t unit, int bits, uint8_t* payload, float* restored) nogil
    void rtn_decode(const uint8_t* payload, size_t count, size_t unit, int bits, float* out) nogil
    void hyper_encode(const float* x, size_t count, const HyperSide& side, uint8_t* packed, float* restored) nogil
    int hyper_decode(const uint8_t* packed, size_t count, const HyperSide& side, float* out) nogil
    void nearest_lattice(const double* ux, const double* uy, size_t count, double l, uint32_t n,
                         int64_t* out) nogil
    int hyper_stats(const float* x, size_t count, double coverage, double* cx, double* cy, double* radius,
                    double* quantile) nogil
    void error_sums(const float* restored, const float* weights, size_t count, double* sq_error,
                    double* abs_error, double* sq_weight) nogil
    const char* isa_name() nogil


cdef void _need(size_t have, size_t need, str what) except *:
    if have != need:
        raise ValueError(f"{what}: {have} elements, expected {need}")


def isa():
    """The instruction-set build of the kernels in use: "x86-64-v3" or "baseline" (LOSSY_GENERIC=1 forces it)."""
    return isa_name().decode()


def packed_bytes(size_t count, int width):
    """ceil(count * width / 8): the bytes of ``count`` values packed at ``width`` bits."""
    return packed_size(count, width)


def pack(const uint32_t[::1] values, int width, uint8_t[::1] out):
    """Pack ``values`` (each below 2**width, 1 <= width <= 32) into ``out`` (exactly packed_bytes bytes)."""
    if not 1 <= width <= 32:
        raise ValueError(f"width must be 1..32, got {width}")
    cdef size_t count = values.shape[0]
    _need(out.shape[0], packed_size(count, width), "packed output")
    if count:
        with nogil:
            pack_bits(&values[0], count, width, &out[0])


def unpack(const uint8_t[::1] packed, int width, uint32_t[::1] out):
    """Inverse of :func:`pack`; ``packed`` must be exactly packed_bytes(len(out), width) bytes."""
    if not 1 <= width <= 32:
        raise ValueError(f"width must be 1..32, got {width}")
    cdef size_t count = out.shape[0]
    _need(packed.shape[0], packed_size(count, width), "packed input")
    if count:
        with nogil:
            unpack_bits(&packed[0], count, width, &out[0])


def rtn_quantise(const float[::1] x, size_t unit, int bits, uint8_t[::1] payload, float[::1] restored):
    """rtn's payload of ``x`` (steps, minimums, packed q's) into ``payload``; the decoded values into ``restored``."""
    cdef size_t count = x.shape[0]
    if not 2 <= bits <= 8 or unit < 1 or count < 1:
        raise ValueError("rtn: bits must be 2..8, unit and count >= 1")
    _need(restored.shape[0], count, "rtn restored")
    _need(payload.shape[0], 8 * ((count + unit - 1) // unit) + packed_size(count, bits), "rtn payload")
    with nogil:
        rtn_encode(&x[0], count, unit, bits, &payload[0], &restored[0])


def rtn_dequantise(const uint8_t[::1] payload, size_t unit, int bits, float[::1] out):
    """Decode an rtn payload (checked to be exactly the size its count, unit and bits give) into ``out``."""
    cdef size_t count = out.shape[0]
    if not 2 <= bits <= 8 or unit < 1 or count < 1:
        raise ValueError("rtn: bits must be 2..8, unit and count >= 1")
    cdef size_t need = 8 * ((count + unit - 1) // unit) + packed_size(count, bits)
    if <size_t>payload.shape[0] != need:
        raise CorruptArtifactError(f"{payload.shape[0]} bytes, expected {need} for {count} values in groups of "
                                   f"{unit} at {bits} bits")
    with nogil:
        rtn_decode(&payload[0], count, unit, bits, &out[0])


cdef HyperSide _side(double l, uint32_t n, int rings, bint lattice, const double[:, ::1] points,
                     const double[::1] grow, double cx, double cy, double radius, int width) except *:
    if points.shape[0] != n + 1 or points.shape[1] != 2 or grow.shape[0] != rings + 1:
        raise ValueError("hyper: codebook or ring table of the wrong size")
    if not 1 <= width <= 32:
        raise ValueError(f"hyper: index width must be 1..32, got {width}")
    cdef HyperSide side
    side.l, side.cx, side.cy, side.radius = l, cx, cy, radius
    side.n, side.rings, side.lattice, side.width = n, rings, lattice, width
    side.points, side.grow = &points[0, 0], &grow[0]
    return side


def hyper_quantise(const float[::1] x, double l, uint32_t n, int rings, bint lattice, const double[:, ::1] points,
                   const double[::1] grow, double cx, double cy, double radius, int width, uint8_t[::1] packed,
                   float[::1] restored):
    """Pair up ``x``, write the packed codeword indices into ``packed`` and the decoded values into ``restored``."""
    cdef HyperSide side = _side(l, n, rings, lattice, points, grow, cx, cy, radius, width)
    cdef size_t count = x.shape[0]
    if count < 1:
        raise ValueError("hyper: nothing to quantise")
    _need(restored.shape[0], count, "hyper restored")
    _need(packed.shape[0], packed_size((count + 1) // 2, width), "hyper packed")
    with nogil:
        hyper_encode(&x[0], count, side, &packed[0], &restored[0])


def hyper_dequantise(const uint8_t[::1] packed, double l, uint32_t n, int rings, bint lattice,
                     const double[:, ::1] points, const double[::1] grow, double cx, double cy, double radius,
                     int width, float[::1] out):
    """Decode packed codeword indices into ``out``; CorruptArtifactError on a wrong size or an index out of range."""
    cdef HyperSide side = _side(l, n, rings, lattice, points, grow, cx, cy, radius, width)
    cdef size_t count = out.shape[0]
    cdef size_t need = packed_size((count + 1) // 2, width)
    if count < 1:
        raise ValueError("hyper: nothing to decode")
    if <size_t>packed.shape[0] != need:
        raise CorruptArtifactError(f"{packed.shape[0]} bytes of packed indices, expected {need}")
    cdef int rc
    with nogil:
        rc = hyper_decode(&packed[0], count, side, &out[0])
    if rc:
        raise CorruptArtifactError(f"an index is out of range for n={n}, M={rings}")


def lattice_nearest(const double[::1] ux, const double[::1] uy, double l, uint32_t n, int64_t[::1] out):
    """Index of the nearest lattice codeword to each local point (closed form)."""
    cdef size_t count = ux.shape[0]
    _need(uy.shape[0], count, "lattice uy")
    _need(out.shape[0], count, "lattice out")
    if n < 1 or not l > 0:
        raise ValueError("lattice: n >= 1 and l > 0 needed")
    if count:
        with nogil:
            nearest_lattice(&ux[0], &uy[0], count, l, n, &out[0])


def pair_stats(const float[::1] x, double coverage):
    """(cx, cy, R, quantile) of the pairs of ``x``: centroid, largest distance from it and, when coverage > 0, the
    coverage-quantile of the pairs' infinity-norm distance from it (0.0 otherwise)."""
    cdef size_t count = x.shape[0]
    if count < 1:
        raise ValueError("hyper: no values")
    cdef double cx = 0, cy = 0, radius = 0, quantile = 0
    cdef int rc
    with nogil:
        rc = hyper_stats(&x[0], count, coverage, &cx, &cy, &radius, &quantile)
    if rc:
        raise MemoryError("hyper: out of memory computing the tensor's statistics")
    return cx, cy, radius, quantile


def error_totals(const float[::1] restored, const float[::1] weights):
    """(sum of squared errors, sum of absolute errors, sum of squared weights) in float64."""
    cdef size_t count = weights.shape[0]
    _need(restored.shape[0], count, "restored")
    cdef double sq = 0, ab = 0, ww = 0
    if count:
        with nogil:
            error_sums(&restored[0], &weights[0], count, &sq, &ab, &ww)
    return sq, ab, ww
