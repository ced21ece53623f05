"""Whole-model operations: compress a fine-tuned folder against its base, restore it, verify it, inspect it.

The pipeline owns everything that is not one tensor's coding: walking files in their byte order, hashing every
original tensor and file, fingerprinting each base tensor used, storing identical tensors once, progress and
cancellation, and writing outputs under temporary names that only become visible when complete.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ._bytecoding import zstd_compress, zstd_decompress
from ._threads import resolve_threads
from .abc import DTYPE_SIZES, CancelCheck, Codec, EncodedChunk, ProgressCallback, TensorSpec, check_cancel
from .container import FORMAT_VERSION, ContainerReader, ContainerWriter
from .errors import ConfigError, CorruptArtifactError, VerificationError, WrongBaseError
from .hfio import ModelFolder, ReadBuffer, TensorRef
from .registry import get_codec

BLOB_CHUNK = 4 << 20
LIBRARY_VERSION = "0.1.0"


def _peak_rss() -> int:
    """This process's peak resident memory. VmHWM, unlike ru_maxrss, does not inherit the peak of the parent a
    Celery pool process was forked from."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class VerifyReport:
    ok: bool
    files: list[dict]
    message: str
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def _as_codec(codec: Codec | dict | str) -> Codec:
    return codec if isinstance(codec, Codec) else get_codec(codec)


class _Progress:
    """Turns chunk-level events into ``progress(done, total, stage)`` calls."""

    def __init__(self, callback: ProgressCallback | None, total: int):
        self.callback, self.total, self.done = callback, total, 0

    def advance(self, nbytes: int, stage: str) -> None:
        self.done = min(self.total, self.done + nbytes)
        if self.callback is not None:
            self.callback(self.done, self.total, stage)


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


def _sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


def compress_model(finetuned_dir, out_path, *, codec: Codec | dict | str, base_dir=None, threads: int | None = None,
                   progress: ProgressCallback | None = None, cancel: CancelCheck | None = None) -> CompressSummary:
    """Compress every file of ``finetuned_dir`` into one artifact at ``out_path``."""
    codec = _as_codec(codec)
    if codec.needs_base and base_dir is None:
        raise ConfigError(f"codec {codec.codec_id!r} needs the base model (base_dir)")
    threads = resolve_threads(threads)
    started = time.perf_counter()
    with ExitStack() as stack:
        tuned = stack.enter_context(ModelFolder(finetuned_dir))
        # a codec that does not use the base never gets it, so its artifacts decode without one
        base = stack.enter_context(ModelFolder(base_dir)) if base_dir is not None and codec.needs_base else None
        # the fine-tuned tensor, its base and the file each have a sha256 running beside the coding
        hasher = stack.enter_context(ThreadPoolExecutor(3, thread_name_prefix="modelcodecs-hash"))
        meter = _Progress(progress, tuned.total_bytes)
        writer = ContainerWriter(out_path)  # before prepare(), which may be long: a bad output path fails at once
        try:
            codec.prepare(finetuned_dir=str(finetuned_dir), base_dir=None if base is None else str(base_dir),
                          progress=progress, cancel=cancel)
            encoder = _TensorEncoder(codec, base, writer, hasher, threads, cancel, meter)
            tensor_buffer = ReadBuffer()  # one tensor at a time: each is read into the same memory
            files = []
            for plan in tuned.files:
                file_hash = hashlib.sha256()
                segments = []
                for seg in plan.segments:
                    check_cancel(cancel)
                    if isinstance(seg, TensorRef):
                        data = tuned.read_tensor(seg, tensor_buffer)
                        file_update = hasher.submit(file_hash.update, data)
                        segments.append({"tensor": encoder.add(seg, data)})
                        file_update.result()
                        del data  # add() and the file hash are done with it: the buffer is free again
                    else:
                        data = tuned.read_range(plan.name, *seg)
                        file_hash.update(data)
                        segments.append({"size": len(data),
                                         "chunks": [writer.write_chunk(c) for c in _blob_chunks(data)]})
                        meter.advance(len(data), f"compressing {plan.name}")
                files.append({"name": plan.name, "size": plan.size, "kind": plan.kind,
                              "sha256": file_hash.hexdigest(), "segments": segments})
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
        seconds=round(seconds, 3), mb_per_s=_mb_per_s(original, seconds), peak_rss_bytes=_peak_rss(),
        bytes_by_coder=encoder.bytes_by_coder)


class _TensorEncoder:
    """Codes tensors one at a time into the container and keeps their index records."""

    def __init__(self, codec: Codec, base: ModelFolder | None, writer: ContainerWriter, hasher: ThreadPoolExecutor,
                 threads: int, cancel: CancelCheck | None, meter: _Progress):
        self.codec, self.base, self.writer, self.hasher = codec, base, writer, hasher
        self.threads, self.cancel, self.meter = threads, cancel, meter
        self.records: list[dict] = []
        self.by_content: dict[tuple, int] = {}
        self.seen_specs: set[tuple] = set()
        self.duplicates = 0
        self.bytes_by_coder: dict[str, int] = {}
        self.base_buffer = ReadBuffer()

    def _base_for(self, ref: TensorRef) -> tuple[TensorRef | None, memoryview | None]:
        if self.base is None or not ref.named:
            return None, None
        base_ref = self.base.tensors.get(ref.name)
        if base_ref is None or base_ref.spec != ref.spec:
            return None, None
        return base_ref, self.base.read_tensor(base_ref, self.base_buffer)

    def add(self, ref: TensorRef, data: memoryview) -> int:
        """Code one tensor; every use of ``data`` and of the base tensor is over when this returns."""
        spec = ref.spec
        key = (spec.dtype, spec.shape)
        # Hash before coding only when an identical tensor is possible; otherwise hash while coding.
        digest: str | Future = _sha256(data) if key in self.seen_specs else self.hasher.submit(_sha256, data)
        self.seen_specs.add(key)
        if isinstance(digest, str) and (digest, *key) in self.by_content:
            self.duplicates += 1
            self.records.append({"name": spec.name, "dtype": spec.dtype, "shape": list(spec.shape),
                                 "sha256": digest, "base": None, "same_as": self.by_content[(digest, *key)]})
            self.meter.advance(spec.nbytes, f"compressing {spec.name} (duplicate)")
            return len(self.records) - 1
        base_ref, base_data = self._base_for(ref)
        base_digest = self.hasher.submit(_sha256, base_data) if base_data is not None else None
        item = 1 if getattr(self.codec, "meta_n_unit", "elements") == "bytes" else DTYPE_SIZES[spec.dtype]
        chunks, reported = [], 0
        for chunk in self.codec.encode_tensor(spec, memoryview(data), base_data, threads=self.threads,
                                              cancel=self.cancel):
            chunks.append(self.writer.write_chunk(chunk))
            self.bytes_by_coder[chunk.coder] = self.bytes_by_coder.get(chunk.coder, 0) + len(chunk.payload)
            # codecs count ``meta["n"]`` in elements or in bytes: report at most the tensor's size, top up after
            step = chunk.meta.get("n", 0) if isinstance(chunk.meta.get("n"), int) else 0
            step = max(0, min(step * item, spec.nbytes - reported))
            reported += step
            self.meter.advance(step, f"compressing {spec.name}")
        self.meter.advance(spec.nbytes - reported, f"compressing {spec.name}")
        digest = digest if isinstance(digest, str) else digest.result()
        self.by_content.setdefault((digest, *key), len(self.records))
        self.records.append({
            "name": spec.name, "dtype": spec.dtype, "shape": list(spec.shape), "sha256": digest,
            "base": base_ref.name if base_ref else None,
            "base_sha256": base_digest.result() if base_digest else None, "chunks": chunks,
        })
        return len(self.records) - 1


# -- decode ------------------------------------------------------------------------------------------------------

class _ArtifactDecoder:
    """Decodes tensors and files of an open artifact, checking the base first and every hash on the way."""

    def __init__(self, reader: ContainerReader, base: ModelFolder | None, threads: int,
                 cancel: CancelCheck | None, meter: _Progress, hasher: ThreadPoolExecutor):
        self.reader, self.base, self.threads, self.cancel, self.meter = reader, base, threads, cancel, meter
        self.hasher = hasher  # file_pieces() checks each tensor's hash here while the caller uses the tensor
        self.index = reader.index
        self.codec = get_codec(self.index["codec"])
        # file_pieces() hands out one tensor at a time, so base and output tensors reuse the same memory
        self.base_buffer, self.out_buffer = ReadBuffer(), ReadBuffer()
        # a codec registered as lossless is always checked, whatever the index claims
        self.lossless = self.index["lossless"] or self.codec.lossless

    def check_base(self) -> None:
        """Every base tensor the artifact was coded against must be present and hash to its fingerprint."""
        used = [t for t in self.index["tensors"] if t.get("base")]
        if used and self.base is None:
            raise WrongBaseError(f"this artifact was made against a base model ({len(used)} tensors); "
                                 f"give the base folder")
        refs = []
        for t in used:
            ref = self.base.tensors.get(t["base"])
            if ref is None:
                raise WrongBaseError(f"the base has no tensor {t['base']!r}, which this artifact was made against")
            if ref.spec.dtype != t["dtype"] or list(ref.spec.shape) != t["shape"]:
                raise WrongBaseError(f"base tensor {t['base']!r} is {ref.spec.dtype}{list(ref.spec.shape)}, the "
                                     f"artifact expects {t['dtype']}{t['shape']}: wrong base model")
            refs.append((ref, t["base_sha256"]))

        def fingerprint(item: tuple[TensorRef, str]) -> tuple[TensorRef, bool]:
            check_cancel(self.cancel)
            ref, expected = item
            return ref, self.base.tensor_sha256(ref) == expected

        with ThreadPoolExecutor(max(1, self.threads), thread_name_prefix="modelcodecs-base") as pool:
            for ref, ok in pool.map(fingerprint, refs):
                if not ok:
                    raise WrongBaseError(f"base tensor {ref.name!r} differs from the one this artifact was made "
                                         f"against: wrong base model")

    def tensor_bytes(self, position: int) -> bytearray:
        """One decoded tensor, checked against its recorded hash."""
        out = self._decoded(position, bytearray)
        self._check(position, out)
        return out

    def _check(self, position: int, data) -> None:
        t = self.index["tensors"][position]
        if self.lossless and _sha256(data) != t["sha256"]:
            raise VerificationError(f"tensor {t['name']!r} does not match its recorded sha256: the artifact is "
                                    f"corrupted")

    def _decoded(self, position: int, allocate) -> bytearray | memoryview:
        """One decoded tensor, not yet checked, in memory from ``allocate(nbytes)``."""
        t = self.index["tensors"][position]
        source = self.index["tensors"][t["same_as"]] if t.get("same_as") is not None else t
        spec = TensorSpec(t["name"], t["dtype"], tuple(t["shape"]))
        chunks = [self.reader.read_chunk(rec) for rec in source["chunks"]]
        base_data = None
        if source.get("base"):  # the size is that of a real base tensor (check_base compared them)
            base_data = self.base.read_tensor(self.base.tensors[source["base"]], self.base_buffer)
        else:
            payload = sum(chunk.nbytes for chunk in chunks)
            if spec.nbytes > self.codec.max_expansion * payload + 4096:
                raise CorruptArtifactError(f"tensor {t['name']!r} claims {spec.nbytes:,} bytes from {payload:,} bytes "
                                           f"of payload, more than {self.codec.codec_id} can decode: corrupted "
                                           f"artifact")
        try:
            out = allocate(spec.nbytes)
        except MemoryError:  # a crafted index can claim any size; say so instead of failing obscurely
            raise CorruptArtifactError(f"tensor {t['name']!r} claims {spec.nbytes:,} bytes, more memory than this "
                                       f"machine can give: corrupted artifact or too little memory") from None
        self.codec.decode_tensor(spec, chunks, base_data, memoryview(out), threads=self.threads, cancel=self.cancel)
        return out

    def file_pieces(self, entry: dict) -> Iterator[bytes | bytearray | memoryview]:
        """The file's bytes piece by piece; a piece is valid until the next one is asked for. A tensor's hash is
        checked while the caller uses it, and a mismatch raises before the next piece (or the end) is reached."""
        for seg in entry["segments"]:
            check_cancel(self.cancel)
            if "tensor" not in seg:
                data = self._byte_range(entry["name"], seg)
                self.meter.advance(len(data), f"restoring {entry['name']}")
                yield data
                continue
            data = self._decoded(seg["tensor"], self.out_buffer.view)
            self.meter.advance(len(data), f"restoring {entry['name']}")
            check = self.hasher.submit(self._check, seg["tensor"], data)
            try:
                yield data
            finally:
                wait([check])  # the buffer is not reused before its check is done
            check.result()
            del data  # drop the view: the buffer may need to be replaced by a larger one

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


def _open_decoder(stack: ExitStack, artifact_path, base_dir, threads, cancel, progress) -> _ArtifactDecoder:
    reader = stack.enter_context(ContainerReader(artifact_path))
    base = stack.enter_context(ModelFolder(base_dir)) if base_dir is not None else None
    meter = _Progress(progress, reader.index["original_bytes"])
    hasher = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="modelcodecs-check"))
    decoder = _ArtifactDecoder(reader, base, resolve_threads(threads), cancel, meter, hasher)
    decoder.check_base()
    return decoder


def decompress_model(artifact_path, out_dir, *, base_dir=None, threads: int | None = None,
                     progress: ProgressCallback | None = None, cancel: CancelCheck | None = None
                     ) -> DecompressSummary:
    """Restore the fine-tuned folder into ``out_dir`` (absent or empty), checking every hash as it writes."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"{out_dir}: output folder exists and is not empty")
    started = time.perf_counter()
    with ExitStack() as stack:
        decoder = _open_decoder(stack, artifact_path, base_dir, threads, cancel, progress)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_dir.with_name(f".{out_dir.name}.partial-{os.urandom(6).hex()}")
        tmp.mkdir()
        try:
            written = 0
            for entry in decoder.index["files"]:
                path = tmp / entry["name"]
                path.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with open(path, "xb") as handle:
                    for piece in decoder.file_pieces(entry):
                        digest.update(piece)
                        handle.write(piece)
                        written += len(piece)
                        del piece
                if decoder.checks_file(entry) and digest.hexdigest() != entry["sha256"]:
                    raise VerificationError(f"{entry['name']}: restored file does not match its recorded sha256")
            if out_dir.exists():
                out_dir.rmdir()
            os.replace(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    seconds = time.perf_counter() - started
    return DecompressSummary(files=len(decoder.index["files"]), bytes_written=written, seconds=round(seconds, 3),
                             mb_per_s=_mb_per_s(written, seconds), verified=decoder.lossless,
                             lossless=decoder.lossless, peak_rss_bytes=_peak_rss())


def verify_artifact(artifact_path, *, base_dir=None, reference_dir=None, threads: int | None = None,
                    progress: ProgressCallback | None = None, cancel: CancelCheck | None = None) -> VerifyReport:
    """Decode everything in memory (nothing is written) and check every recorded hash; with ``reference_dir``,
    also check that the recorded hashes are those of the reference folder's files."""
    started = time.perf_counter()
    results, problems = [], []
    with ExitStack() as stack:
        decoder = _open_decoder(stack, artifact_path, base_dir, threads, cancel, progress)
        for entry in decoder.index["files"]:
            digest = hashlib.sha256()
            try:
                for piece in decoder.file_pieces(entry):
                    digest.update(piece)
                    del piece
                ok = not decoder.checks_file(entry) or digest.hexdigest() == entry["sha256"]
            except VerificationError as exc:
                ok = False
                problems.append(str(exc))
            if not ok and not problems:
                problems.append(f"{entry['name']}: restored bytes do not match the recorded sha256")
            results.append({"name": entry["name"], "sha256": digest.hexdigest(), "ok": ok})
    if reference_dir is not None:
        recorded = {e["name"]: e["sha256"] for e in decoder.index["files"]}
        with ModelFolder(reference_dir) as reference:
            names = {plan.name for plan in reference.files}
            for name in sorted(names ^ set(recorded)):
                problems.append(f"{name}: present in only one of the artifact and {reference_dir}")
            for result in results:
                if result["name"] in names and decoder.checks_file(
                        next(e for e in decoder.index["files"] if e["name"] == result["name"])):
                    if reference.file_sha256(result["name"]) != recorded[result["name"]]:
                        result["ok"] = False
                        problems.append(f"{result['name']}: differs from the reference folder's file")
    ok = not problems and all(r["ok"] for r in results)
    message = "all files verified" if ok else "; ".join(problems[:5])
    if ok and not decoder.lossless:
        message = "lossy artifact: non-tensor files verified, tensors decode with recorded dtypes and shapes"
    return VerifyReport(ok=ok, files=results, message=message, seconds=round(time.perf_counter() - started, 3))


def decode_tensor(artifact_path, name: str, *, base_dir=None, threads: int | None = None
                  ) -> tuple[TensorSpec, bytearray]:
    """Decode one tensor by name without reading the others' payloads."""
    with ExitStack() as stack:
        reader = stack.enter_context(ContainerReader(artifact_path))
        base = stack.enter_context(ModelFolder(base_dir)) if base_dir is not None else None
        positions = [i for i, t in enumerate(reader.index["tensors"]) if t["name"] == name]
        if not positions:
            raise ConfigError(f"the artifact has no tensor {name!r}")
        hasher = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="modelcodecs-check"))
        decoder = _ArtifactDecoder(reader, base, resolve_threads(threads), None, _Progress(None, 0), hasher)
        t = reader.index["tensors"][positions[0]]
        source = reader.index["tensors"][t["same_as"]] if t.get("same_as") is not None else t
        if source.get("base"):
            if base is None or source["base"] not in base.tensors:
                raise WrongBaseError(f"tensor {name!r} was coded against base tensor {source['base']!r}: give the "
                                     f"base folder that has it")
            if base.tensor_sha256(base.tensors[source["base"]]) != source["base_sha256"]:
                raise WrongBaseError(f"base tensor {source['base']!r} differs from the one used: wrong base model")
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

