"""Whole-model operations: compress a fine-tuned folder against its base, restore it, verify it, inspect it.

The pipeline owns everything that is not one tensor's coding: walking files in their byte order, hashing every
original tensor and file, fingerprinting each base tensor used, storing identical tensors once, progress and
cancellation, and writing outputs under temporary names that only become visible when complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack, closing
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ._bytecoding import zstd_compress, zstd_decompress
from ._hashing import tensor_digest, tensor_hasher
from ._threads import resolve_threads
from .abc import DTYPE_SIZES, CancelCheck, Codec, EncodedChunk, ProgressCallback, TensorSpec, check_cancel
from .container import FORMAT_VERSION, ContainerReader, ContainerWriter, tensor_hash_keys
from .errors import CancelledError, ConfigError, CorruptArtifactError, VerificationError, WrongBaseError
from .hfio import BufferPool, ModelFolder, TensorRef
from .memory import peak_rss
from .registry import get_codec

BLOB_CHUNK = 4 << 20
# Tensors read, hashed and coded ahead of the one being written hold at most this many bytes of the fine-tune; a
# larger tensor is worked on alone, its chunks spread over the threads (memory: about twice the largest tensor).
WINDOW_BYTES = 64 << 20
# A tensor up to this size is coded whole by one worker (many small tensors keep every thread busy); a larger one
# has its chunks coded on all threads.
SMALL_TENSOR_BYTES = 8 << 20
HASH_KEY, BASE_HASH_KEY = tensor_hash_keys(FORMAT_VERSION)
LIBRARY_VERSION = "0.1.0"


def _mb_per_s(nbytes: int, seconds: float) -> float:
    return round(nbytes / 1e6 / seconds, 1) if seconds > 0 else 0.0


@dataclass
class CompressSummary:
    codec: str
    codec_config: dict
    original_bytes: int
    compressed_bytes: int
    ratio: float
    tensors: int
    files: int
    deduplicated_tensors: int
    seconds: float
    mb_per_s: float
    peak_rss_bytes: int
    bytes_by_coder: dict = field(default_factory=dict)
    prepared: dict = field(default_factory=dict)  # what the codec's prepare() reported (e.g. the distillation)
    codec_report: dict = field(default_factory=dict)
    counted: str = "original = every file of the fine-tuned folder; compressed = the whole artifact file"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class DecompressSummary:
    files: int
    bytes_written: int
    seconds: float
    mb_per_s: float
    verified: bool
    lossless: bool
    peak_rss_bytes: int
    # the sha256 of every file checked while it was written (what model hubs show for a file)
    file_sha256: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class VerifyReport:
    ok: bool
    files: list[dict]
    message: str
    seconds: float = 0.0
    # lossy artifacts verified against the fine-tune: per approximated tensor, the relative Frobenius error of
    # its delta ||restored - tuned|| / ||tuned - base|| and the largest absolute error
    tensors: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _as_codec(codec: Codec | dict | str) -> Codec:
    return codec if isinstance(codec, Codec) else get_codec(codec)


class _Progress:
    """Turns chunk-level events into ``progress(done, total, stage)`` calls. With ``prepare_share`` > 0, the
    codec's prepare() reports the first part of the bar (its steps scaled into it) and the bytes the rest."""

    def __init__(self, callback: ProgressCallback | None, total: int, prepare_share: float = 0.0):
        self.callback, self.total, self.done = callback, total, 0
        self.offset = int(total * prepare_share / (1.0 - prepare_share)) if prepare_share else 0

    def advance(self, nbytes: int, stage: str) -> None:
        self.done = min(self.total, self.done + nbytes)
        if self.callback is not None:
            self.callback(self.offset + self.done, self.offset + self.total, stage)

    def prepare_progress(self, done: int, total: int, stage: str) -> None:
        if self.callback is not None and total:
            self.callback(int(self.offset * min(done, total) / total), self.offset + self.total, stage)


# -- the work window -----------------------------------------------------------------------------------------------

def _run_ordered(items: list, prepare, size_of, shared: _SharedWork, stop: threading.Event) -> Iterator:
    """``prepare(item)`` for each item on the command's worker threads, results yielded in order. Work runs ahead
    of the consumer on at most ``2 * threads`` items holding at most the window's bytes (``size_of``); an item
    larger than the window is prepared alone, once the consumer is done with everything before it, so memory holds
    one large tensor at a time (the consumer gives each result's memory back when done with it). Setting ``stop``
    (or leaving the generator) cancels what has not started and waits for what has."""
    threads, window = shared.threads, shared.window
    pending: deque = deque()
    inflight = 0
    position = 0
    try:
        while True:
            while position < len(items):
                size = size_of(items[position])
                if pending and (len(pending) >= 2 * threads or inflight + size > window):
                    break
                pending.append((shared.workers.submit(prepare, items[position]), size))
                inflight += size
                position += 1
            if not pending:
                return
            future, size = pending.popleft()
            inflight -= size
            result = future.result()
            del future
            yield result
            del result  # the consumer is done with it: its memory may go before the next item is prepared
    finally:
        stop.set()
        for future, _ in pending:
            future.cancel()
        wait([future for future, _ in pending])


def _row_bytes(spec: TensorSpec) -> int:
    return spec.nbytes // spec.shape[0] if spec.shape and spec.shape[0] else 0


def _rows_spec(spec: TensorSpec, rows: int) -> TensorSpec:
    return TensorSpec(spec.name, spec.dtype, (rows, *spec.shape[1:]))


class _SharedTensor:
    """A base tensor read once for several fine-tunes or artifacts of one command, held until the last is done."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.data: memoryview | None = None


class _Base:
    """A base folder opened once for any number of fine-tunes or artifacts: its headers are parsed once, and each
    base tensor's fingerprint is computed once, on the bytes read for coding, then remembered. The fine-tunes (or
    artifacts) of one command run in lock-step (:func:`_lockstep`) and announce up front which base tensors they will
    use (``expect``): a tensor several of them use is read once, shared, and let go after the last ``release``."""

    def __init__(self, base_dir):
        self.dir = base_dir
        self.folder = ModelFolder(base_dir)
        self._fingerprints: dict[tuple, str] = {}
        self._lock = threading.Lock()
        self._uses: Counter[str] = Counter()  # base tensor name -> uses announced and not yet released
        self._widest: dict[str, int] = {}  # base tensor name -> the most bytes any use needs (rows may differ)
        self._shared: dict[str, _SharedTensor] = {}

    def match(self, ref: TensorRef) -> tuple[TensorRef, int | None] | None:
        """The base tensor a fine-tuned tensor is coded against: same name and dtype, and the same shape (rows None)
        or the same shape but for the first dimension (a vocabulary grown or cut: the shared leading rows)."""
        base_ref = self.folder.tensors.get(ref.name) if ref.named else None
        if base_ref is None or base_ref.spec.dtype != ref.spec.dtype:
            return None
        mine, theirs = ref.spec.shape, base_ref.spec.shape
        if mine == theirs:
            return base_ref, None
        if len(mine) == len(theirs) >= 1 and mine[1:] == theirs[1:] and min(mine[0], theirs[0]) > 0 \
                and _row_bytes(ref.spec) > 0:
            return base_ref, min(mine[0], theirs[0])
        return None

    def nbytes(self, ref: TensorRef, rows: int | None) -> int:
        return ref.spec.nbytes if rows is None else rows * _row_bytes(ref.spec)

    def read(self, ref: TensorRef, rows: int | None, pool: BufferPool | None = None) -> bytearray | memoryview:
        """The base tensor's bytes (its first ``rows`` rows), in memory from ``pool`` when given."""
        size = self.nbytes(ref, rows)
        return self.folder.read_tensor(ref, None if pool is None else pool.take(size), nbytes=size)

    def fingerprint(self, ref: TensorRef, rows: int | None, data, version: int) -> str:
        key = (ref.name, rows, version)
        with self._lock:
            known = self._fingerprints.get(key)
        if known is None:
            known = tensor_digest(data, version)
            with self._lock:
                self._fingerprints[key] = known
        return known

    def read_part(self, ref: TensorRef, start: int, end: int, pool: BufferPool) -> memoryview:
        """Bytes ``start:end`` of a base tensor, in a block of ``pool``."""
        return self.folder.read_range(ref.file, ref.offset + start, ref.offset + end, pool.take(end - start))

    def shared(self, ref: TensorRef) -> bool:
        """Whether more than one use of ``ref`` is expected (it is then read whole, once)."""
        with self._lock:
            return self._uses[ref.name] > 1

    def expect(self, ref: TensorRef, rows: int | None) -> None:
        """A tensor of this command will be coded against ``ref`` (its first ``rows`` rows) and release it once."""
        with self._lock:
            self._uses[ref.name] += 1
            self._widest[ref.name] = max(self._widest.get(ref.name, 0), self.nbytes(ref, rows))

    def acquire(self, ref: TensorRef, rows: int | None, pool: BufferPool, version: int) -> tuple[memoryview, str]:
        """The base tensor's bytes (first ``rows`` rows) and their fingerprint; give them back with ``release``. A
        tensor more than one expected use is read once by the first and shared; the others wait for it."""
        with self._lock:
            shared = self._shared.get(ref.name)
            first = shared is None and self._uses[ref.name] > 1
            if first:
                shared = self._shared[ref.name] = _SharedTensor()
        size = self.nbytes(ref, rows)
        if first:
            try:
                widest = self._widest[ref.name]
                shared.data = self.folder.read_tensor(ref, pool.take(widest), nbytes=widest)
                self.fingerprint(ref, rows, shared.data[:size], version)  # before the others look for it
            finally:
                shared.ready.set()
        elif shared is not None:
            shared.ready.wait()
        if shared is None or shared.data is None:  # used once (or the first user's read failed: it says why)
            data = self.read(ref, rows, pool)
        else:
            data = shared.data[:size]
        return data, self.fingerprint(ref, rows, data, version)

    def release(self, ref: TensorRef, data: memoryview | None, pool: BufferPool) -> None:
        """One expected use of ``ref`` is over (``data`` from ``acquire``, or None: the tensor turned out not to need
        it, e.g. a duplicate); a shared tensor's memory goes back to ``pool`` after the last use."""
        with self._lock:
            if self._uses[ref.name] > 0:
                self._uses[ref.name] -= 1
            shared = self._shared.get(ref.name)
            last = shared is not None and self._uses[ref.name] == 0
            if last:
                del self._shared[ref.name]
        if data is not None and (shared is None or shared.data is None or data.obj is not shared.data.obj):
            pool.give(data)  # read for this use alone
        elif last and shared.data is not None:
            pool.give(shared.data)

    def close(self) -> None:
        self.folder.close()

    def __enter__(self) -> _Base:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_base_matches(tuned: ModelFolder, base: _Base, finetuned_dir) -> None:
    """Refuse a base that shares no tensor, or under half of the tensor bytes, with the fine-tune."""
    named = [ref for ref in tuned.iter_tensors() if ref.named]
    total = sum(ref.spec.nbytes for ref in named)
    if not total:
        return
    shared_bytes, shared, unmatched = 0, 0, []
    for ref in named:
        match = base.match(ref)
        if match is None:
            unmatched.append(ref)
            continue
        shared += 1
        shared_bytes += ref.spec.nbytes if match[1] is None else match[1] * _row_bytes(ref.spec)
    if shared and 2 * shared_bytes >= total:
        return
    namesakes = sum(1 for ref in named if ref.name in base.folder.tensors)
    example = ""
    if unmatched:  # a namesake that differs says more than a missing name
        ref = next((r for r in unmatched if r.name in base.folder.tensors), unmatched[0])
        twin = base.folder.tensors.get(ref.name)
        example = (f"; e.g. {ref.name!r} is {ref.spec.dtype}{list(ref.spec.shape)}, the base has "
                   + (f"{twin.spec.dtype}{list(twin.spec.shape)}" if twin else "no tensor of that name"))
    raise WrongBaseError(
        f"the base {base.dir} does not match the fine-tune {finetuned_dir}: compared by tensor name, dtype and shape, "
        f"{shared} of its {len(named)} tensors ({shared_bytes:,} of {total:,} bytes, "
        f"{100 * shared_bytes / total:.0f}%) match ({namesakes} with a namesake in the base){example}. At least half "
        f"of the bytes must match for the base to help; give the right base, or --allow-unmatched-base "
        f"(allow_unmatched_base=True) to compress anyway")


# -- compress ----------------------------------------------------------------------------------------------------

def _blob_chunks(data: bytearray) -> Iterator[EncodedChunk]:
    view = memoryview(data)
    for start in range(0, len(view), BLOB_CHUNK):
        piece = view[start:start + BLOB_CHUNK]
        packed = zstd_compress(piece, 3)
        if len(packed) < len(piece):
            yield EncodedChunk("zstd", packed, {"n": len(piece)})
        else:
            yield EncodedChunk("raw", bytes(piece), {"n": len(piece)})


def compress_model(finetuned_dir, out_path, *, codec: Codec | dict | str, base_dir=None, threads: int | None = None,
                   progress: ProgressCallback | None = None, cancel: CancelCheck | None = None,
                   allow_unmatched_base: bool = False, calibration_text=None, on_step=None) -> CompressSummary:
    """Compress every file of ``finetuned_dir`` into one artifact at ``out_path``. A base that shares no tensor, or
    under half of the tensor bytes, with the fine-tune raises :class:`WrongBaseError` unless
    ``allow_unmatched_base``. Codecs that train in ``prepare()`` (``calibration_tokens() > 0``) need
    ``calibration_text`` (a UTF-8 text file) and call ``on_step(metrics)`` after each step; their steps fill the
    first 90 % of the progress."""
    return compress_models([finetuned_dir], [out_path], codec=codec, base_dir=base_dir, threads=threads,
                           progress=progress, cancel=cancel, allow_unmatched_base=allow_unmatched_base,
                           calibration_text=calibration_text, on_step=on_step)[0]


def compress_models(finetuned_dirs, out_paths, *, codec: Codec | dict | str, base_dir=None,
                    threads: int | None = None, progress: ProgressCallback | None = None,
                    cancel: CancelCheck | None = None, allow_unmatched_base: bool = False, calibration_text=None,
                    on_step=None) -> list[CompressSummary]:
    """Several fine-tunes of one base, one artifact each (``out_paths[i]`` for ``finetuned_dirs[i]``): they are
    coded side by side, tensor by tensor, so that each base byte is read and fingerprinted once for all of them
    while memory holds about one window of tensors. ``progress`` counts them together (bytes done and total summed
    over all). If one fails, the artifacts not yet complete are removed and the error raised."""
    finetuned_dirs, out_paths = list(finetuned_dirs), list(out_paths)
    if len(finetuned_dirs) != len(out_paths) or not finetuned_dirs:
        raise ConfigError("give one output path per fine-tuned folder")
    codec = _as_codec(codec)
    if codec.needs_base and base_dir is None:
        raise ConfigError(f"codec {codec.codec_id!r} needs the base model (base_dir)")
    training = {}
    if codec.calibration_tokens() > 0:
        if calibration_text is None:
            raise ConfigError(f"codec {codec.codec_id!r} with this config needs calibration text "
                              f"({codec.calibration_tokens()} tokens)")
        training = {"calibration_text": str(calibration_text), "on_step": on_step}
    with ExitStack() as stack:
        # a codec that does not use the base never gets it, so its artifacts decode without one
        base = stack.enter_context(_Base(base_dir)) if base_dir is not None and codec.needs_base else None
        shared = stack.enter_context(_SharedWork(len(finetuned_dirs), threads))
        # prepare() may leave per-model state in a codec (BitDelta's scales): one instance per fine-tune
        codecs = [codec] + [type(codec).from_config(codec.get_config()) for _ in finetuned_dirs[1:]]
        progresses = _joint_progress(progress, len(finetuned_dirs))
        return _lockstep([_compress_steps(ft, out, c, base, shared, p, cancel, allow_unmatched_base, training)
                          for ft, out, c, p in zip(finetuned_dirs, out_paths, codecs, progresses)])


class _SharedWork:
    """What the fine-tunes (or artifacts) of one command share, so that neither threads nor memory grow with their
    number: ``threads`` worker threads, one thread for the files' sha256, one pool of blocks, and the window of work
    ahead split between them. (A worker waits only for a base tensor another running worker is reading, so one
    set of workers serves all without deadlock.) Close it when done."""

    def __init__(self, models: int, threads: int | None):
        self.threads = resolve_threads(threads)
        self.workers = ThreadPoolExecutor(self.threads, thread_name_prefix="modelcodecs-tensor")
        self.hasher = ThreadPoolExecutor(1, thread_name_prefix="modelcodecs-hash")
        self.pool = BufferPool(keep=4 * self.threads + 2)
        self.window = max(1, WINDOW_BYTES // models)

    def __enter__(self) -> _SharedWork:
        return self

    def __exit__(self, *exc) -> None:
        self.workers.shutdown(wait=True, cancel_futures=True)
        self.hasher.shutdown(wait=True)


def _joint_progress(progress: ProgressCallback | None, models: int) -> list[ProgressCallback | None]:
    """One callback per model of a lock-step command, reporting to ``progress`` the sum over all of them."""
    if progress is None or models == 1:
        return [progress] * models
    seen = [(0, 0)] * models

    def reporter(i: int) -> ProgressCallback:
        def report(done: int, total: int, stage: str) -> None:
            seen[i] = (done, total)
            progress(sum(d for d, _ in seen), sum(t for _, t in seen), stage)
        return report
    return [reporter(i) for i in range(models)]


def _lockstep(steps: list[Iterator]) -> list:
    """Run generators side by side, one step (one tensor) of each in turn, and return what each returns. Every
    generator's first step only opens and plans (announcing its base tensors), so all plans are known before any
    base tensor is read; the fine-tunes of one base then need each base tensor at about the same time, and it is
    read once and held only while they pass it. An error stops (and cleans up) the unfinished ones."""
    results: list = [None] * len(steps)
    active = list(range(len(steps)))
    try:
        while active:
            for i in list(active):
                try:
                    next(steps[i])
                except StopIteration as done:
                    results[i] = done.value
                    active.remove(i)
    finally:
        for step in steps:
            step.close()
    return results


def _compress_steps(finetuned_dir, out_path, codec: Codec, base: _Base | None, shared: _SharedWork, progress,
                    cancel, allow_unmatched_base: bool, training: dict) -> Iterator[None]:
    """Compress one fine-tune, yielding after planning and after each tensor (see :func:`_lockstep`); returns its
    :class:`CompressSummary`."""
    started = time.perf_counter()
    # names only pair tensors with the base; gradient sets repeat parameter names in every step's file
    with ModelFolder(finetuned_dir, unique_names=codec.needs_base) as tuned:
        if base is not None and not allow_unmatched_base:
            _check_base_matches(tuned, base, finetuned_dir)
        meter = _Progress(progress, tuned.total_bytes, 0.9 if training else 0.0)
        writer = ContainerWriter(out_path)  # before prepare(), which may be long: a bad output path fails at once
        try:
            prepared = codec.prepare(finetuned_dir=str(finetuned_dir),
                                     base_dir=None if base is None else str(base.dir),
                                     progress=meter.prepare_progress, cancel=cancel, **training) or {}
            encoder = _Encoder(codec, tuned, base, writer, shared, cancel, meter)
            yield
            files = yield from encoder.run()
            index = {
                "format": FORMAT_VERSION, "codec": codec.get_config(), "lossless": codec.lossless,
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "library_version": LIBRARY_VERSION, "original_bytes": tuned.total_bytes,
                "files": files, "tensors": encoder.records,
            }
            compressed = writer.finish(index)
        except BaseException:
            writer.abort()
            raise
    seconds = time.perf_counter() - started
    original = tuned.total_bytes
    return CompressSummary(
        codec=codec.codec_id, codec_config=codec.get_config(), original_bytes=original,
        compressed_bytes=compressed, ratio=round(original / compressed, 4) if compressed else 0.0,
        tensors=len(encoder.records), files=len(files), deduplicated_tensors=encoder.duplicates,
        seconds=round(seconds, 3), mb_per_s=_mb_per_s(original, seconds), peak_rss_bytes=peak_rss(),
        bytes_by_coder=encoder.bytes_by_coder, prepared=prepared, codec_report=codec.encode_report())


@dataclass
class _Prepared:
    """One fine-tuned tensor as a worker left it: read, hashed, its base read and fingerprinted, and (when it is
    small) already coded."""

    ref: TensorRef
    position: int
    data: memoryview
    digest: str
    base_ref: TensorRef | None = None
    base_rows: int | None = None
    base_data: memoryview | None = None
    base_digest: str | None = None
    chunks: list | None = None  # [(EncodedChunk, crc32)], or None: code it when it is written
    base_chunks: int | None = None
    base_released: bool = False


class _Encoder:
    """Codes a fine-tuned folder's tensors into the container in file order. Workers read, hash and code tensors
    ahead of the writer (``_run_ordered``); the writer thread writes their chunks and keeps each file's sha256."""

    def __init__(self, codec: Codec, tuned: ModelFolder, base: _Base | None, writer: ContainerWriter,
                 shared: _SharedWork, cancel: CancelCheck | None, meter: _Progress):
        self.codec, self.tuned, self.base, self.writer = codec, tuned, base, writer
        self.shared, self.threads, self.pool = shared, shared.threads, shared.pool
        self.cancel, self.meter = cancel, meter
        self.records: list[dict] = []
        self.duplicates = 0
        self.bytes_by_coder: dict[str, int] = {}
        self.by_content: dict[tuple, tuple[int, TensorRef]] = {}  # written tensors: (digest, dtype, shape) -> first
        self._claims: dict[tuple, int] = {}  # the same for tensors hashed by the workers: earliest position
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._item = 1 if getattr(codec, "meta_n_unit", "elements") == "bytes" else None
        items = [seg for plan in tuned.files for seg in plan.segments if isinstance(seg, TensorRef)]
        self.items = list(zip(items, range(len(items))))
        for ref, _ in self.items:  # every tensor with a base tensor releases it once, in _write
            match = base.match(ref) if base is not None else None
            if match is not None:
                base.expect(*match)

    def run(self) -> Iterator[None]:
        """Write every file, yielding after each tensor; returns the files' index entries."""
        prepared = _run_ordered(self.items, self._prepare, lambda item: item[0].spec.nbytes, self.shared, self._stop)
        files = []
        try:
            for plan in self.tuned.files:
                file_hash = hashlib.sha256()
                segments = []
                for seg in plan.segments:
                    check_cancel(self.cancel)
                    if isinstance(seg, TensorRef):
                        item = next(prepared)
                        # the file's sha256 runs beside the writing (and, for a large tensor, the coding)
                        hashed = self.shared.hasher.submit(file_hash.update, item.data)
                        try:
                            segments.append({"tensor": self._write(item)})
                        finally:
                            wait([hashed])
                        hashed.result()
                        self.pool.give(item.data)
                        del item
                        yield
                    else:
                        data = self.tuned.read_range(plan.name, *seg)
                        file_hash.update(data)
                        segments.append({"size": len(data),
                                         "chunks": [self.writer.write_chunk(c) for c in _blob_chunks(data)]})
                        self.meter.advance(len(data), f"compressing {plan.name}")
                files.append({"name": plan.name, "size": plan.size, "kind": plan.kind,
                              "sha256": file_hash.hexdigest(), "segments": segments})
        finally:
            prepared.close()
        return files

    # -- on a worker thread ----------------------------------------------------------------------------------------
    def _prepare(self, item: tuple[TensorRef, int]) -> _Prepared:
        ref, position = item
        if self._stop.is_set():
            raise CancelledError("stopped")
        check_cancel(self.cancel)
        spec = ref.spec
        data = self.tuned.read_tensor(ref, self.pool.take(spec.nbytes))
        out = _Prepared(ref, position, data, tensor_digest(data, FORMAT_VERSION))
        key = (out.digest, spec.dtype, spec.shape)
        with self._lock:
            earlier = self._claims.get(key)
            if earlier is None or position < earlier:
                self._claims[key] = earlier = position
        if earlier < position:
            return out  # an earlier tensor has the same bytes: written as a reference to it (checked there)
        self._read_base(out)
        if spec.nbytes <= SMALL_TENSOR_BYTES:  # a large one is coded while it is written, its chunks on all threads
            out.chunks = list(self._coded(out, 1))
            self._drop_base(out)
        return out

    def _read_base(self, item: _Prepared) -> None:
        match = self.base.match(item.ref) if self.base is not None else None
        if match is not None:
            item.base_ref, item.base_rows = match
            item.base_data, item.base_digest = self.base.acquire(item.base_ref, item.base_rows, self.pool,
                                                                 FORMAT_VERSION)

    def _drop_base(self, item: _Prepared) -> None:
        """Done with the base tensor: released once per fine-tuned tensor that has one, whether it read it or not (a
        duplicate does not), so that a base tensor shared with other fine-tunes goes after the last of them."""
        if self.base is None or item.base_released:
            return
        item.base_released = True
        match = (item.base_ref, item.base_rows) if item.base_ref is not None else self.base.match(item.ref)
        if match is not None:
            self.base.release(match[0], item.base_data, self.pool)
        item.base_data = None

    def _parts(self, item: _Prepared) -> list[tuple[TensorSpec, memoryview, memoryview | None]]:
        """(spec, bytes, base bytes) to code: the whole tensor, or its rows shared with the base and the rest."""
        spec, data = item.ref.spec, memoryview(item.data)
        base = None if item.base_data is None else memoryview(item.base_data)
        if item.base_rows is None:
            return [(spec, data, base)]
        split = item.base_rows * _row_bytes(spec)
        parts = [(_rows_spec(spec, item.base_rows), data[:split], base)]
        if spec.shape[0] > item.base_rows:
            parts.append((_rows_spec(spec, spec.shape[0] - item.base_rows), data[split:], None))
        return parts

    def _coded(self, item: _Prepared, threads: int) -> Iterator[tuple[EncodedChunk, int]]:
        count = 0
        for k, (spec, data, base) in enumerate(self._parts(item)):
            if k == 1:
                item.base_chunks = count
            for chunk in self.codec.encode_tensor(spec, data, base, threads=threads, cancel=self.cancel):
                count += 1
                yield chunk, zlib.crc32(chunk.payload)
        if item.base_rows is not None and item.base_chunks is None:
            item.base_chunks = count

    # -- on the writer thread --------------------------------------------------------------------------------------
    def _write(self, item: _Prepared) -> int:
        spec = item.ref.spec
        position = len(self.records)
        assert position == item.position
        key = (item.digest, spec.dtype, spec.shape)
        first = self.by_content.get(key)
        if first is not None and self.tuned.read_tensor(first[1]) == item.data:  # the digest's word is checked
            self.duplicates += 1
            self.records.append({"name": spec.name, "dtype": spec.dtype, "shape": list(spec.shape),
                                 HASH_KEY: item.digest, "base": None, "same_as": first[0]})
            self.meter.advance(spec.nbytes, f"compressing {spec.name} (duplicate)")
            self._drop_base(item)
            return position
        if item.chunks is None:
            if item.base_ref is None:
                self._read_base(item)  # skipped by the worker as a duplicate that was not one
            chunks = self._coded(item, self.threads)
        else:
            chunks = iter(item.chunks)
        records, reported = [], 0
        item_size = self._item or DTYPE_SIZES[spec.dtype]
        for chunk, crc in chunks:
            records.append(self.writer.write_chunk(chunk, crc))
            self.bytes_by_coder[chunk.coder] = self.bytes_by_coder.get(chunk.coder, 0) + len(chunk.payload)
            # codecs count ``meta["n"]`` in elements or in bytes: report at most the tensor's size, top up after
            step = chunk.meta.get("n", 0) if isinstance(chunk.meta.get("n"), int) else 0
            step = max(0, min(step * item_size, spec.nbytes - reported))
            reported += step
            self.meter.advance(step, f"compressing {spec.name}")
        self.meter.advance(spec.nbytes - reported, f"compressing {spec.name}")
        item.chunks = None
        self._drop_base(item)
        self.by_content.setdefault(key, (position, item.ref))
        record = {"name": spec.name, "dtype": spec.dtype, "shape": list(spec.shape), HASH_KEY: item.digest,
                  "base": item.base_ref.name if item.base_ref else None,
                  BASE_HASH_KEY: item.base_digest, "chunks": records}
        if item.base_rows is not None:
            record.update(base_rows=item.base_rows, base_chunks=item.base_chunks)
        self.records.append(record)
        return position


# -- decode ------------------------------------------------------------------------------------------------------

@dataclass
class _Part:
    """Chunks ``first:last`` of a large tensor, which restore its bytes ``start:end``."""

    first: int
    last: int
    start: int
    end: int


class _ArtifactDecoder:
    """Decodes tensors and files of an open artifact. Each base tensor is read once, when it is needed, and checked
    against its fingerprint before it is used; every decoded tensor is checked against its digest."""

    def __init__(self, reader: ContainerReader, base: _Base | None, shared: _SharedWork, cancel: CancelCheck | None,
                 meter: _Progress, prior=None):
        self.reader, self.base, self.cancel, self.meter = reader, base, cancel, meter
        self.shared, self.threads, self.pool = shared, shared.threads, shared.pool
        self.index = reader.index
        self.version = self.index["format"]
        self.hash_key, self.base_hash_key = tensor_hash_keys(self.version)
        self.codec = _decoding_codec(self.index["codec"], prior)
        # a codec registered as lossless is always checked, whatever the index claims
        self.lossless = self.index["lossless"] or self.codec.lossless
        self._stop = threading.Event()
        self._copy_from = None

    def check_base(self) -> None:
        """Every base tensor the artifact was coded against must be present with its dtype and shape (from the base's
        headers: nothing is read here). Its fingerprint is checked when it is read, before it is used."""
        used = [t for t in self.index["tensors"] if t.get("base")]
        if used and self.base is None:
            raise WrongBaseError(f"this artifact was made against a base model ({len(used)} tensors); "
                                 f"give the base folder")
        for t in used:
            self._base_ref(t)

    def expect_base(self) -> None:
        """Announce the base tensors a restore of every tensor uses (see :class:`_Base`)."""
        for t in self.index["tensors"]:
            if t.get("base") and t.get("same_as") is None:
                self.base.expect(self._base_ref(t), t.get("base_rows"))

    def _base_ref(self, t: dict) -> TensorRef:
        ref = self.base.folder.tensors.get(t["base"])
        if ref is None:
            raise WrongBaseError(f"the base has no tensor {t['base']!r}, which this artifact was made against")
        rows = t.get("base_rows")
        shape = list(ref.spec.shape)
        fits = shape == t["shape"] if rows is None else (shape[1:] == t["shape"][1:] and shape and shape[0] >= rows)
        if ref.spec.dtype != t["dtype"] or not fits:
            raise WrongBaseError(f"base tensor {t['base']!r} is {ref.spec.dtype}{shape}, the artifact expects "
                                 f"{t['dtype']}{t['shape']}" + (f" sharing its first {rows} rows" if rows else "")
                                 + ": wrong base model")
        return ref

    def tensor_bytes(self, position: int) -> bytearray:
        """One decoded tensor, checked against its recorded digest."""
        return self._decoded(position, pooled=False)

    def exact(self, position: int) -> bool:
        """Whether the tensor decodes to its original bytes (always, in a lossless artifact)."""
        t = self.index["tensors"][position]
        source = self.index["tensors"][t["same_as"]] if t.get("same_as") is not None else t
        return self.lossless or self.codec.exact_tensor([c["coder"] for c in source["chunks"]])

    def _check(self, position: int, data) -> None:
        t = self.index["tensors"][position]
        if self.exact(position) and tensor_digest(data, self.version) != t[self.hash_key]:
            raise VerificationError(f"tensor {t['name']!r} does not match its recorded {self.hash_key}: the "
                                    f"artifact is corrupted")

    def _decoded(self, position: int, threads: int | None = None, pooled: bool = True) -> bytearray | memoryview:
        """One tensor decoded and checked, in a block of the pool (give it back when done) or fresh memory."""
        if self._stop.is_set():
            raise CancelledError("stopped")
        check_cancel(self.cancel)
        t = self.index["tensors"][position]
        source = self.index["tensors"][t["same_as"]] if t.get("same_as") is not None else t
        spec = TensorSpec(t["name"], t["dtype"], tuple(t["shape"]))
        chunks = [self.reader.read_chunk(rec) for rec in source["chunks"]]
        base_data, rows = None, source.get("base_rows")
        if source.get("base"):  # the size is that of a real base tensor (_base_ref compared them)
            ref = self._base_ref(source)
            base_data, fingerprint = self.base.acquire(ref, rows, self.pool, self.version)
            if fingerprint != source[self.base_hash_key]:
                raise WrongBaseError(f"base tensor {ref.name!r} differs from the one this artifact was made against: "
                                     f"wrong base model")
        payload = sum(chunk.nbytes for chunk in chunks)
        unbased = spec.nbytes if base_data is None else spec.nbytes - len(base_data)
        if unbased > self.codec.max_expansion * payload + 4096:
            raise CorruptArtifactError(f"tensor {t['name']!r} claims {spec.nbytes:,} bytes from {payload:,} bytes "
                                       f"of payload, more than {self.codec.codec_id} can decode: corrupted artifact")
        out = self._take(spec.nbytes, t["name"], pooled)
        threads = self.threads if threads is None else threads
        view = memoryview(out)
        if rows is None:
            self.codec.decode_tensor(spec, chunks, base_data, view, threads=threads, cancel=self.cancel)
        else:
            split, k = len(base_data), source["base_chunks"]
            self.codec.decode_tensor(_rows_spec(spec, rows), chunks[:k], memoryview(base_data), view[:split],
                                     threads=threads, cancel=self.cancel)
            if spec.shape[0] > rows:
                self.codec.decode_tensor(_rows_spec(spec, spec.shape[0] - rows), chunks[k:], None, view[split:],
                                         threads=threads, cancel=self.cancel)
            elif k != len(chunks):
                raise CorruptArtifactError(f"tensor {t['name']!r}: chunks beyond its shared rows")
        del view
        if base_data is not None:
            self.base.release(ref, base_data, self.pool)
        self._check(position, out)
        return out

    def _parts(self, position: int) -> list[_Part] | None:
        """A large tensor of a codec whose chunks decode alone, cut into runs of chunks of about half
        SMALL_TENSOR_BYTES; None when it is decoded whole (small, a duplicate, rows shared with the base, or a base
        tensor shared with other artifacts of the command, which is read whole once for all)."""
        t = self.index["tensors"][position]
        item = DTYPE_SIZES.get(t["dtype"])
        if (not self.codec.chunks_decode_alone or item is None or t.get("same_as") is not None
                or t.get("base_rows") is not None or (t.get("base") and self.base.shared(self._base_ref(t)))):
            return None
        nbytes = TensorSpec(t["name"], t["dtype"], tuple(t["shape"])).nbytes
        if nbytes <= SMALL_TENSOR_BYTES:
            return None
        parts, first, start, end = [], 0, 0, 0
        for k, rec in enumerate(t["chunks"]):
            count = rec.get("meta", {}).get("n") if isinstance(rec.get("meta"), dict) else None
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise CorruptArtifactError(f"tensor {t['name']!r}: chunk {k} has a bad element count")
            end += count * item
            if end - start >= SMALL_TENSOR_BYTES // 2 or k == len(t["chunks"]) - 1:
                parts.append(_Part(first, k + 1, start, end))
                first, start = k + 1, end
        if end != nbytes:
            raise CorruptArtifactError(f"tensor {t['name']!r}: chunks hold {end:,} bytes, expected {nbytes:,}")
        return parts

    def _decoded_part(self, position: int, part: _Part) -> tuple[memoryview, memoryview | None]:
        """Part of a tensor decoded (not yet checked: its digests are followed in order by ``pieces``) and the base
        bytes it was decoded against, both in blocks of the pool."""
        if self._stop.is_set():
            raise CancelledError("stopped")
        check_cancel(self.cancel)
        t = self.index["tensors"][position]
        chunks = [self.reader.read_chunk(rec) for rec in t["chunks"][part.first:part.last]]
        size = part.end - part.start
        base = self.base.read_part(self._base_ref(t), part.start, part.end, self.pool) if t.get("base") else None
        if base is None and size > self.codec.max_expansion * sum(chunk.nbytes for chunk in chunks) + 4096:
            raise CorruptArtifactError(f"tensor {t['name']!r} claims {size:,} bytes from too little payload for "
                                       f"{self.codec.codec_id}: corrupted artifact")
        out = self._take(size, t["name"])
        spec = TensorSpec(t["name"], t["dtype"], (size // DTYPE_SIZES[t["dtype"]],))
        self.codec.decode_tensor(spec, chunks, base, out, threads=1, cancel=self.cancel)
        return out, base

    def _take(self, size: int, name: str, pooled: bool = True) -> memoryview | bytearray:
        try:
            return self.pool.take(size) if pooled else bytearray(size)
        except MemoryError:  # a crafted index can claim any size; say so instead of failing obscurely
            raise CorruptArtifactError(f"tensor {name!r} claims {size:,} bytes, more memory than this machine can "
                                       f"give: corrupted artifact or too little memory") from None

    def _piece(self, item: tuple[dict, dict, _Part | None]):
        """A segment's bytes (or a part's, with its base bytes), on a worker thread; None for a duplicate the
        writer copies from what it wrote."""
        entry, seg, part = item
        if "tensor" not in seg:
            return self._byte_range(entry["name"], seg)
        if part is not None:
            return self._decoded_part(seg["tensor"], part)
        t = self.index["tensors"][seg["tensor"]]
        if t.get("same_as") is not None and self._copy_from is not None:
            return None
        small = TensorSpec(t["name"], t["dtype"], tuple(t["shape"])).nbytes <= SMALL_TENSOR_BYTES
        return self._decoded(seg["tensor"], 1 if small else None)

    def _seg_size(self, item: tuple[dict, dict, _Part | None]) -> int:
        _, seg, part = item
        if part is not None:
            return part.end - part.start
        if "tensor" not in seg:
            return seg["size"]
        t = self.index["tensors"][seg["tensor"]]
        return TensorSpec(t["name"], t["dtype"], tuple(t["shape"])).nbytes

    def _follow(self, position: int, part: _Part, data, base, running: list) -> None:
        """Add a part (in order) to its tensor's running digests; at the last part, check them: the base's
        fingerprint, then the tensor's digest. Nothing restored is visible before the whole restore is checked."""
        t = self.index["tensors"][position]
        if part.first == 0:
            running[:] = [tensor_hasher(self.version), tensor_hasher(self.version) if base is not None else None]
        running[0].update(data)
        if base is not None:
            running[1].update(base)
            self.pool.give(base)
        if part.last < len(t["chunks"]):
            return
        if running[1] is not None and running[1].hexdigest() != t[self.base_hash_key]:
            raise WrongBaseError(f"base tensor {t['base']!r} differs from the one this artifact was made against: "
                                 f"wrong base model")
        if running[0].hexdigest() != t[self.hash_key]:
            raise VerificationError(f"tensor {t['name']!r} does not match its recorded {self.hash_key}: the "
                                    f"artifact is corrupted")

    def pieces(self, copy_from=None) -> Iterator[tuple[dict, dict, bytes | bytearray]]:
        """(file entry, segment, bytes) for every segment of every file, in order, decoded ahead on the worker
        threads (a large tensor comes in several pieces, checked at its last); a piece is valid until the next one
        is asked for. ``copy_from(position)`` gives the bytes of a tensor already restored, or None (a duplicate is
        then copied rather than decoded again). Give each piece back (``give_back``) once done with it."""
        self._copy_from = copy_from
        items = []
        for entry in self.index["files"]:
            for seg in entry["segments"]:
                parts = self._parts(seg["tensor"]) if "tensor" in seg else None
                items += [(entry, seg, None)] if parts is None else [(entry, seg, part) for part in parts]
        results = _run_ordered(items, self._piece, self._seg_size, self.shared, self._stop)
        running: list = []  # the digests of the tensor restored in parts
        for entry, seg, part in items:
            try:
                data = next(results)
                if part is not None:
                    data, base = data
                    self._follow(seg["tensor"], part, data, base, running)
                elif data is None:  # a duplicate: copied from where its first copy was restored, else decoded again
                    data = copy_from(self.index["tensors"][seg["tensor"]]["same_as"])
                    if data is None:
                        data = self._decoded(seg["tensor"], pooled=False)
                    self._check(seg["tensor"], data)
            except VerificationError as exc:
                exc.file_name = entry["name"]  # which file the bad tensor belongs to (verify_artifact reports it)
                raise
            self.meter.advance(len(data), f"restoring {entry['name']}")
            yield entry, seg, data
            del data

    def give_back(self, piece) -> None:
        """A piece from ``pieces`` the caller is done with: its block goes back to the pool (if it came from it)."""
        if isinstance(piece, memoryview):
            self.pool.give(piece)

    def _byte_range(self, name: str, seg: dict) -> bytearray:
        data = bytearray()
        for rec in seg["chunks"]:
            size = rec["meta"].get("n")
            if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= seg["size"]:
                raise CorruptArtifactError(f"{name}: bad byte-range chunk")
            if rec["coder"] == "zstd":
                data += zstd_decompress(self.reader.read_payload(rec), size, name)
            elif rec["coder"] == "raw" and rec["length"] == size:
                data += self.reader.read_payload(rec)
            else:
                raise CorruptArtifactError(f"{name}: bad byte-range chunk")
        if len(data) != seg["size"]:
            raise CorruptArtifactError(f"{name}: byte range restored to the wrong size")
        return data

    def checks_file(self, entry: dict) -> bool:
        """Lossless artifacts restore every file exactly; lossy ones only the files that hold no tensors."""
        return self.lossless or not any("tensor" in seg for seg in entry["segments"])


def _decoding_codec(config: dict, prior) -> Codec:
    """The artifact's codec; a codec with a prior (LM-GC) may be given the prior's folder where it is now (the
    codec still checks the prior's fingerprint against the one recorded)."""
    codec = get_codec(config)
    if prior is not None and codec.needs_prior:
        codec = get_codec({**config, "prior": str(prior)})
    return codec


def _open_decoder(stack: ExitStack, artifact_path, base: _Base | None, shared: _SharedWork, cancel, progress,
                  prior=None) -> _ArtifactDecoder:
    reader = stack.enter_context(ContainerReader(artifact_path))
    meter = _Progress(progress, reader.index["original_bytes"])
    decoder = _ArtifactDecoder(reader, base, shared, cancel, meter, prior)
    decoder.check_base()
    return decoder


def decompress_model(artifact_path, out_dir, *, base_dir=None, threads: int | None = None,
                     progress: ProgressCallback | None = None, cancel: CancelCheck | None = None, prior=None
                     ) -> DecompressSummary:
    """Restore the fine-tuned folder into ``out_dir`` (absent or empty), checking every hash as it writes."""
    return decompress_models([artifact_path], [out_dir], base_dir=base_dir, threads=threads, progress=progress,
                             cancel=cancel, prior=prior)[0]


def decompress_models(artifact_paths, out_dirs, *, base_dir=None, threads: int | None = None,
                      progress: ProgressCallback | None = None, cancel: CancelCheck | None = None, prior=None
                      ) -> list[DecompressSummary]:
    """Restore several artifacts made against one base (``out_dirs[i]`` for ``artifact_paths[i]``): they are
    restored side by side, tensor by tensor, so that each base byte is read and fingerprinted once for all of them
    while memory holds about one window of tensors. ``progress`` counts them together (bytes done and total summed
    over all). If one fails, the folders not yet complete are removed and the error raised."""
    artifact_paths, out_dirs = list(artifact_paths), [Path(d) for d in out_dirs]
    if len(artifact_paths) != len(out_dirs) or not artifact_paths:
        raise ConfigError("give one output folder per artifact")
    for out_dir in out_dirs:
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            raise ConfigError(f"{out_dir}: output folder exists and is not empty")
    with ExitStack() as stack:
        base = stack.enter_context(_Base(base_dir)) if base_dir is not None else None
        shared = stack.enter_context(_SharedWork(len(artifact_paths), threads))
        progresses = _joint_progress(progress, len(artifact_paths))
        return _lockstep([_decompress_steps(a, o, base, shared, p, cancel, prior)
                          for a, o, p in zip(artifact_paths, out_dirs, progresses)])


def _decompress_steps(artifact_path, out_dir: Path, base: _Base | None, shared: _SharedWork, progress, cancel,
                      prior=None) -> Iterator[None]:
    """Restore one artifact, yielding after planning and after each piece (see :func:`_lockstep`); returns its
    :class:`DecompressSummary`."""
    started = time.perf_counter()
    with ExitStack() as stack:
        decoder = _open_decoder(stack, artifact_path, base, shared, cancel, progress, prior)
        if base is not None:
            decoder.expect_base()
        yield
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_dir.with_name(f".{out_dir.name}.partial-{os.urandom(6).hex()}")
        tmp.mkdir()
        written_at: dict[int, tuple[Path, int, int]] = {}  # tensor position -> where it was restored

        def copy_from(position: int) -> bytearray | None:
            if position not in written_at:  # a crafted index may list a duplicate before its first copy
                return None
            path, offset, size = written_at[position]
            with open(path, "rb") as restored:
                return bytearray(os.pread(restored.fileno(), size, offset))

        written, handle, current, digest, offset, pieces, last_seg = 0, None, None, None, 0, None, None
        try:
            def close_file(entry: dict) -> None:
                handle.close()
                if decoder.checks_file(entry) and digest.hexdigest() != entry["sha256"]:
                    raise VerificationError(f"{entry['name']}: restored file does not match its recorded sha256")

            for entry in decoder.index["files"]:  # files without segments (empty) get no pieces
                if not entry["segments"]:
                    (tmp / entry["name"]).parent.mkdir(parents=True, exist_ok=True)
                    (tmp / entry["name"]).touch(exist_ok=False)
                    if decoder.checks_file(entry) and hashlib.sha256().hexdigest() != entry["sha256"]:
                        raise VerificationError(f"{entry['name']}: restored file does not match its recorded sha256")
            pieces = stack.enter_context(closing(decoder.pieces(copy_from)))
            for entry, seg, piece in pieces:
                if entry is not current:
                    if current is not None:
                        close_file(current)
                    current, offset = entry, 0
                    path = tmp / entry["name"]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    handle, digest = open(path, "xb", buffering=0), hashlib.sha256()
                # the file's sha256 runs beside the write
                hashed = shared.hasher.submit(digest.update, piece)
                try:
                    view, done = memoryview(piece), 0
                    while done < len(view):
                        done += handle.write(view[done:])
                    del view
                finally:
                    wait([hashed])
                hashed.result()
                if "tensor" in seg:  # a tensor restored in parts: where its first part went, and all its bytes
                    start = offset if seg is not last_seg else written_at[seg["tensor"]][1]
                    written_at[seg["tensor"]] = (path, start, offset + len(piece) - start)
                last_seg = seg
                offset += len(piece)
                written += len(piece)
                decoder.give_back(piece)
                del piece
                yield
            if current is not None:
                close_file(current)
            if out_dir.exists():
                out_dir.rmdir()
            os.replace(tmp, out_dir)
        except BaseException:
            if handle is not None:
                handle.close()
            if pieces is not None:
                pieces.close()  # the workers stop before the partial output goes
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    seconds = time.perf_counter() - started
    return DecompressSummary(files=len(decoder.index["files"]), bytes_written=written, seconds=round(seconds, 3),
                             mb_per_s=_mb_per_s(written, seconds), verified=decoder.lossless,
                             lossless=decoder.lossless, peak_rss_bytes=peak_rss(),
                             file_sha256={e["name"]: e["sha256"] for e in decoder.index["files"]
                                          if decoder.checks_file(e)})


def verify_artifact(artifact_path, *, base_dir=None, reference_dir=None, expected_files: dict[str, str] | None = None,
                    threads: int | None = None, progress: ProgressCallback | None = None,
                    cancel: CancelCheck | None = None, prior=None) -> VerifyReport:
    """Decode everything in memory (nothing is written) and check every recorded hash. The hashes inside an
    artifact prove only that it is intact, not that it holds the right model (a forger re-seals them); so also
    compare the decoded files with hashes kept outside the artifact: those of the files of ``reference_dir``, or
    ``expected_files`` (file name -> sha256, e.g. from a manifest or a registry). Files a lossy codec changes are
    not compared; every file must be present on both sides. ``prior``: where the prior folder of a codec with a
    prior (LM-GC) is now."""
    if reference_dir is not None and expected_files is not None:
        raise ConfigError("give a reference folder or expected file hashes, not both")
    started = time.perf_counter()
    problems = []
    with ExitStack() as stack:
        base = stack.enter_context(_Base(base_dir)) if base_dir is not None else None
        shared = stack.enter_context(_SharedWork(1, threads))
        decoder = _open_decoder(stack, artifact_path, base, shared, cancel, progress, prior)
        entries = decoder.index["files"]
        digests = {e["name"]: hashlib.sha256() for e in entries}
        failed: str | None = None
        try:
            for entry, _, piece in stack.enter_context(closing(decoder.pieces())):
                digests[entry["name"]].update(piece)
                decoder.give_back(piece)
                del piece
        except VerificationError as exc:  # a tensor does not match: its file fails, the later ones go unchecked
            problems.append(str(exc))
            failed = getattr(exc, "file_name", "")
        results, checked = [], True
        for entry in entries:
            digest = digests[entry["name"]].hexdigest()
            checked = checked and entry["name"] != failed
            ok = checked and (not decoder.checks_file(entry) or digest == entry["sha256"])
            if checked and not ok:
                problems.append(f"{entry['name']}: restored bytes do not match the recorded sha256")
            results.append({"name": entry["name"], "sha256": digest, "ok": ok})
        errors = []
        if reference_dir is not None and not decoder.lossless:  # a second pass, tensor by tensor, on a new decoder
            errors = _lossy_errors(_open_decoder(stack, artifact_path, base, shared, cancel, None, prior),
                                   reference_dir)
    if reference_dir is not None:
        with ModelFolder(reference_dir, unique_names=False) as reference:  # only its files' hashes are used
            names = {plan.name for plan in reference.files}
            problems += _compare_outside(decoder, results, names, reference.file_sha256, str(reference_dir))
    elif expected_files is not None:
        problems += _compare_outside(decoder, results, set(expected_files), expected_files.__getitem__,
                                     "the expected files")
    ok = not problems and all(r["ok"] for r in results)
    message = "all files verified" if ok else "; ".join(problems[:5])
    if ok and not decoder.lossless:
        exact = sum(decoder.exact(i) for i in range(len(decoder.index["tensors"])))
        message = (f"lossy artifact: non-tensor files and {exact} losslessly coded tensors verified byte for byte; "
                   f"{len(decoder.index['tensors']) - exact} tensors approximated"
                   + (f" (worst relative delta error {max(e['relative_delta_error'] for e in errors):.4g})"
                      if errors else ""))
    return VerifyReport(ok=ok, files=results, message=message, seconds=round(time.perf_counter() - started, 3),
                        tensors=errors)


def _float64(data, dtype: str):
    import numpy as np

    from .bitdelta.codec import to_float  # the float dtypes a lossy codec restores

    return to_float(data, dtype).astype(np.float64)


def _lossy_errors(decoder: _ArtifactDecoder, reference_dir) -> list[dict]:
    """The error of every approximated float tensor against the reference (fine-tuned) folder's tensor."""
    import numpy as np

    errors = []
    with ModelFolder(reference_dir) as reference:
        for position, t in enumerate(decoder.index["tensors"]):
            check_cancel(decoder.cancel)
            ref = reference.tensors.get(t["name"])
            if decoder.exact(position) or ref is None or t["dtype"] not in ("F16", "BF16", "F32", "F64"):
                continue
            restored = _float64(decoder._decoded(position, pooled=False), t["dtype"])
            tuned = _float64(reference.read_tensor(ref), t["dtype"])
            source = decoder.index["tensors"][t["same_as"]] if t.get("same_as") is not None else t
            base = np.zeros_like(tuned)
            if source.get("base") and source.get("base_rows") is None:
                base = _float64(decoder.base.read(decoder._base_ref(source), None), t["dtype"])
            scale = float(np.linalg.norm(tuned - base))
            error = float(np.linalg.norm(restored - tuned))
            errors.append({"name": t["name"], "relative_delta_error": error / scale if scale else float(error > 0),
                           "max_abs_error": float(np.max(np.abs(restored - tuned))) if tuned.size else 0.0})
    return errors


def _compare_outside(decoder: _ArtifactDecoder, results: list[dict], names: set[str], sha256_of, source: str
                     ) -> list[str]:
    """Compare decoded files (``results``) with hashes from outside the artifact; marks mismatches not ok."""
    entries = {e["name"]: e for e in decoder.index["files"]}
    problems = [f"{name}: present in only one of the artifact and {source}" for name in sorted(names ^ set(entries))]
    for result in results:
        name = result["name"]
        if name in names and decoder.checks_file(entries[name]) and sha256_of(name) != result["sha256"]:
            result["ok"] = False
            problems.append(f"{name}: differs from {source}")
    return problems


def decode_tensor(artifact_path, name: str, *, base_dir=None, threads: int | None = None, prior=None
                  ) -> tuple[TensorSpec, bytearray]:
    """Decode one tensor by name without reading the others' payloads."""
    with ExitStack() as stack:
        reader = stack.enter_context(ContainerReader(artifact_path))
        base = stack.enter_context(_Base(base_dir)) if base_dir is not None else None
        positions = [i for i, t in enumerate(reader.index["tensors"]) if t["name"] == name]
        if not positions:
            raise ConfigError(f"the artifact has no tensor {name!r}")
        shared = stack.enter_context(_SharedWork(1, threads))
        decoder = _ArtifactDecoder(reader, base, shared, None, _Progress(None, 0), prior)
        t = reader.index["tensors"][positions[0]]
        source = reader.index["tensors"][t["same_as"]] if t.get("same_as") is not None else t
        if source.get("base") and (base is None or source["base"] not in base.folder.tensors):
            raise WrongBaseError(f"tensor {name!r} was coded against base tensor {source['base']!r}: give the "
                                 f"base folder that has it")
        return TensorSpec(t["name"], t["dtype"], tuple(t["shape"])), decoder.tensor_bytes(positions[0])


def inspect_artifact(path) -> dict:
    """What an artifact holds, from its index alone (no payload is decoded)."""
    with ContainerReader(path) as reader:
        index, size = reader.index, reader.size
    tensors = []
    for t in index["tensors"]:
        chunks = [] if t.get("same_as") is not None else t["chunks"]
        tensors.append({
            "name": t["name"], "dtype": t["dtype"], "shape": t["shape"],
            "original_bytes": TensorSpec(t["name"], t["dtype"], tuple(t["shape"])).nbytes,
            "compressed_bytes": sum(c["length"] for c in chunks),
            "coders": sorted({c["coder"] for c in chunks}) or ["duplicate"],
            "base": t.get("base"),
        })
    return {
        "codec": index["codec"]["id"], "codec_config": index["codec"], "lossless": index["lossless"],
        "format_version": index["format"], "created_at": index.get("created_at"),
        "original_bytes": index["original_bytes"], "compressed_bytes": size,
        "ratio": round(index["original_bytes"] / size, 4),
        "tensors": len(tensors), "files": [{k: f[k] for k in ("name", "size", "sha256")} for f in index["files"]],
        "tensor_list": tensors,
        "counted": "original = every file of the fine-tuned folder; compressed = the whole artifact file",
    }

