# cython: language_level=3
"""Thin Cython face over the FM-Delta C++ chunk coder (native/fmdelta/fmdelta.cpp).

Sizes are validated here while holding the GIL; the GIL is released only around the C++ call, whose status code
is turned into :class:`modelcodecs.errors.CorruptArtifactError` (decoding) or ``MemoryError``/``ValueError``.
"""

from libc.stdint cimport uint8_t, uint64_t
from libcpp cimport bool as cbool
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.string cimport memcpy

from .errors import CorruptArtifactError

cdef extern from "fmdelta.h" namespace "fmd":
    int dtype_size(int dtype) nogil
    int encode_chunk(const uint8_t* ft, const uint8_t* base, size_t n, int dtype, cbool use_context,
                     cbool allow_shift, const uint8_t** payload, size_t* length) nogil
    int decode_chunk(const uint8_t* payload, size_t length, const uint8_t* base, size_t n, int dtype,
                     uint8_t* out) nogil
    int payload_shift(const uint8_t* payload, size_t length) nogil
    const char* isa_name() nogil
    int reference_stats(const uint8_t* ft, const uint8_t* base, size_t n, int dtype, uint64_t* hist,
                        uint64_t* raw_bits) nogil

# safetensors dtype name -> native dtype code
DTYPE_CODES = {"F16": 0, "BF16": 1, "F32": 2, "F64": 3, "F8_E4M3": 4, "F8_E5M2": 5}

cdef uint8_t _empty[8]


cdef int _code(str dtype) except -1:
    try:
        return DTYPE_CODES[dtype]
    except KeyError:
        raise ValueError(f"fmdelta: no native coder for dtype {dtype!r}") from None


cdef const uint8_t* _ptr(const uint8_t[::1] buf) noexcept:
    return &buf[0] if buf.shape[0] else <const uint8_t*>_empty


def encode(const uint8_t[::1] ft, const uint8_t[::1] base, str dtype, bint context=True, bint shift=True):
    """Encode a chunk of ``dtype`` elements of ``ft`` against ``base`` (same byte length) into a payload.
    ``base=None`` codes the chunk on its own (fields mode: exponent, sign and top mantissa bits modelled)."""
    cdef int code = _code(dtype)
    cdef size_t item = dtype_size(code)
    if base is not None and ft.shape[0] != base.shape[0]:
        raise ValueError("fmdelta: fine-tuned and base chunks differ in size")
    if ft.shape[0] % item:
        raise ValueError(f"fmdelta: {ft.shape[0]} bytes is not a whole number of {dtype} elements")
    cdef size_t n = ft.shape[0] // item
    cdef const uint8_t* pf = _ptr(ft)
    cdef const uint8_t* pb = NULL
    if base is not None:
        pb = _ptr(base)
    cdef const uint8_t* payload = NULL
    cdef size_t length = 0
    cdef int rc
    with nogil:
        rc = encode_chunk(pf, pb, n, code, context, shift, &payload, &length)
    if rc == 3:
        raise MemoryError("fmdelta: out of memory while encoding")
    if rc != 0:
        raise ValueError(f"fmdelta: encoder failed with status {rc}")
    # the payload is this thread's buffer until its next encode or decode call: copy it now, without the GIL
    # (the copy touches fresh pages)
    result = PyBytes_FromStringAndSize(NULL, length)
    cdef char* dst = PyBytes_AS_STRING(result)
    with nogil:
        memcpy(dst, payload, length)
    return result


def decode(const uint8_t[::1] payload, const uint8_t[::1] base, uint8_t[::1] out, str dtype):
    """Decode ``payload`` against ``base`` into ``out`` (both exactly the chunk's byte size); ``base=None`` for
    payloads coded without a base."""
    cdef int code = _code(dtype)
    cdef size_t item = dtype_size(code)
    if out is None:
        raise ValueError("fmdelta: no destination buffer")
    if base is not None and out.shape[0] != base.shape[0]:
        raise ValueError("fmdelta: destination and base chunks differ in size")
    if out.shape[0] % item:
        raise ValueError(f"fmdelta: {out.shape[0]} bytes is not a whole number of {dtype} elements")
    cdef size_t n = out.shape[0] // item
    cdef const uint8_t* pp = _ptr(payload)
    cdef size_t length = payload.shape[0]
    cdef const uint8_t* pb = NULL
    if base is not None:
        pb = _ptr(base)
    cdef uint8_t* po = <uint8_t*>_ptr(out)
    cdef int rc
    with nogil:
        rc = decode_chunk(pp, length, pb, n, code, po)
    if rc == 3:
        raise MemoryError("fmdelta: out of memory while decoding")
    if rc != 0:
        raise CorruptArtifactError("fmdelta: chunk payload is corrupt or truncated")


def isa():
    """The instruction-set build of the core in use: "x86-64-v3" or "baseline" (FMDELTA_GENERIC=1 forces it)."""
    return isa_name().decode()


def shift_of(const uint8_t[::1] payload):
    """The number of zero mantissa bits the payload's encoder shifted out (-1 if the header is unreadable)."""
    return payload_shift(_ptr(payload), payload.shape[0])


def reference_stats_of(const uint8_t[::1] ft, const uint8_t[::1] base, str dtype):
    """(histogram of the reference FM-Delta symbols, total raw bits) over the whole buffer."""
    cdef int code = _code(dtype)
    cdef size_t item = dtype_size(code)
    if ft.shape[0] != base.shape[0] or ft.shape[0] % item:
        raise ValueError("fmdelta: buffers differ in size or are not whole elements")
    cdef uint64_t hist[129]
    cdef uint64_t raw = 0
    cdef size_t n = ft.shape[0] // item
    cdef const uint8_t* pf = _ptr(ft)
    cdef const uint8_t* pb = _ptr(base)
    with nogil:
        reference_stats(pf, pb, n, code, hist, &raw)
    return [hist[i] for i in range(2 * 8 * item + 1)], raw
