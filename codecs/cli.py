"""The ``modelcodecs`` command line: compress, decompress, verify, inspect, list codecs, benchmark.

Errors print one line (``error: ...``) and exit non-zero: 2 for usage and configuration, 1 for bad data.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from . import manifest, pipeline
from .abc import Codec
from .errors import ConfigError, ModelCodecError
from .registry import get_codec_class, list_codecs


def _parse_option(codec_cls: type[Codec], text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    params = {p.name: p for p in codec_cls.params}
    if not sep or key not in params:
        known = ", ".join(params) or "none"
        raise ConfigError(f"--option {text!r}: expected key=value with key one of: {known}")
    kind = params[key].type
    if kind is bool:
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"--option {key}: expected true or false, got {raw!r}")
        return key, raw.lower() in ("true", "1", "yes")
    try:
        return key, kind(raw)
    except ValueError:
        raise ConfigError(f"--option {key}: expected {kind.__name__}, got {raw!r}") from None


STAGE_WIDTH = 40


def short_stage(stage: str, width: int = STAGE_WIDTH) -> str:
    """Fit a stage text such as ``compressing model.layers.0.mlp.up_proj.weight`` in ``width`` characters: the
    verb stays whole, the tensor name loses its start (its end names the weight)."""
    if len(stage) <= width:
        return stage
    verb, _, name = stage.partition(" ")
    room = width - len(verb) - 2  # a space and the ellipsis
    if not name or room < 8:
        return stage[: width - 1] + "…"
    return f"{verb} …{name[-room:]}"


@contextmanager
def _progress_bar(enabled: bool, description: str):
    """A tqdm bar on stderr fed by the pipeline's progress callback; silent when not a TTY or with --quiet."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc=description, file=sys.stderr,
               leave=False, dynamic_ncols=True)

    def update(done: int, total: int, stage: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(short_stage(stage), refresh=False)
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def _print(args, payload: dict, text: str) -> None:
    print(json.dumps(payload, indent=2) if getattr(args, "json", False) else text)


def _outputs(inputs: list[str], output: str, suffix: str) -> list[Path]:
    """One input: ``output`` itself; several: ``output`` is a folder holding one result per input, named after it."""
    if len(inputs) == 1:
        return [Path(output)]
    names = [Path(i).name.removesuffix(".dvz") + suffix for i in inputs]
    if len(set(names)) != len(names):
        raise ConfigError(f"several inputs have the same name ({', '.join(sorted(names))}): give them apart")
    Path(output).mkdir(parents=True, exist_ok=True)
    return [Path(output) / name for name in names]


def _cmd_compress(args) -> int:
    # FM-Delta without --base is FM-Delta without a base: every float tensor coded by its bit fields
    codec_id = args.codec or "fmdelta"
    if codec_id == "fmdelta" and args.base is None:
        codec_id = "fmdelta-nobase"
    codec_cls = get_codec_class(codec_id)
    config = {"id": codec_id, **dict(_parse_option(codec_cls, o) for o in args.option)}
    if args.prior is not None:
        if not codec_cls.needs_prior:
            raise ConfigError(f"codec {codec_id!r} takes no prior")
        config["prior"] = args.prior
    outputs = _outputs(args.finetuned, args.output, ".dvz")
    with _progress_bar(args.show_progress, "compress") as progress:
        summaries = pipeline.compress_models(args.finetuned, outputs, codec=config, base_dir=args.base,
                                             threads=args.threads, progress=progress,
                                             allow_unmatched_base=args.allow_unmatched_base,
                                             calibration_text=args.calibration_text)
    dicts = [s.as_dict() for s in summaries]
    lines = [f"{out}: {s['codec']} ratio {s['ratio']:.3f}x ({s['original_bytes']:,} -> {s['compressed_bytes']:,} "
             f"bytes, {s['tensors']} tensors, {s['deduplicated_tensors']} stored once as duplicates) in "
             f"{s['seconds']:.2f} s, {s['mb_per_s']} MB/s" for out, s in zip(outputs, dicts)]
    _print(args, dicts[0] if len(dicts) == 1 else {"artifacts": dicts}, "\n".join(lines))
    return 0


def _cmd_decompress(args) -> int:
    outputs = _outputs(args.artifact, args.output, "")
    with _progress_bar(args.show_progress, "decompress") as progress:
        summaries = pipeline.decompress_models(args.artifact, outputs, base_dir=args.base, threads=args.threads,
                                               progress=progress, prior=args.prior)
    dicts = [s.as_dict() for s in summaries]
    lines = []
    for out, s in zip(outputs, dicts):
        check = "every file's sha256 verified" if s["verified"] else "lossy: non-tensor files verified"
        lines.append(f"{out}: {s['files']} files, {s['bytes_written']:,} bytes in {s['seconds']:.2f} s "
                     f"({s['mb_per_s']} MB/s); {check}")
    _print(args, dicts[0] if len(dicts) == 1 else {"restored": dicts}, "\n".join(lines))
    return 0


def _cmd_verify(args) -> int:
    with _progress_bar(args.show_progress, "verify") as progress:
        expected = manifest.read_manifest(args.manifest) if args.manifest else None
        report = pipeline.verify_artifact(args.artifact, base_dir=args.base, reference_dir=args.reference,
                                          expected_files=expected, threads=args.threads, progress=progress,
                                          prior=args.prior)
    r = report.as_dict()
    errors = "".join(f"\n  {e['name']}: relative delta error {e['relative_delta_error']:.4g}, max abs error "
                     f"{e['max_abs_error']:.4g}" for e in r["tensors"])
    _print(args, r, f"{'OK' if r['ok'] else 'FAILED'}: {r['message']} ({len(r['files'])} files){errors}")
    return 0 if report.ok else 1


def _cmd_manifest(args) -> int:
    data = manifest.manifest_of(args.folder)
    text = json.dumps(data, indent=2)
    if args.output:
        with open(args.output, "x", encoding="utf-8") as handle:
            handle.write(text + "\n")
        print(f"{args.output}: {len(data['files'])} files")
    else:
        print(text)
    return 0


def _cmd_inspect(args) -> int:
    info = pipeline.inspect_artifact(args.artifact)
    lines = [f"codec      {info['codec']} {json.dumps(info['codec_config'])}",
             f"lossless   {info['lossless']}",
             f"ratio      {info['ratio']:.4f}x  ({info['original_bytes']:,} -> {info['compressed_bytes']:,} bytes; "
             f"{info['counted']})",
             f"files      {len(info['files'])}", f"tensors    {info['tensors']}"]
    lines += [f"  {t['name']:<48} {t['dtype']:>7} {str(t['shape']):<18} {t['original_bytes']:>12,} -> "
              f"{t['compressed_bytes']:>12,}  {','.join(t['coders'])}" for t in info["tensor_list"]]
    _print(args, info, "\n".join(lines))
    return 0


def _cmd_codecs(args) -> int:
    schemas = [cls.config_schema() for cls in list_codecs()]

    def line(schema: dict) -> str:
        options = ", ".join(f"{key}={prop['default']!r}" for key, prop in schema["properties"].items())
        return (f"{schema['title']:<10} {'lossless' if schema['x-lossless'] else 'lossy':<9} "
                f"{'needs base' if schema['x-needs-base'] else 'no base':<10} options: {options or '-'}")

    text = "\n".join(line(schema) for schema in schemas)
    _print(args, {"codecs": schemas}, text)
    return 0


def _cmd_bench(argv: list[str]) -> int:
    from . import bench

    return bench.main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelcodecs", description="Compress fine-tuned models against their base.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, *, threads: bool = True, progress: bool = True) -> None:
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        if threads:
            p.add_argument("--threads", type=int, default=None, help="worker threads (default: all usable cores)")
        if progress:
            p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("compress", help="compress fine-tuned model folders into one .dvz artifact each")
    p.add_argument("finetuned", nargs="+", help="fine-tuned model folder(s) (safetensors or pytorch_model.bin); "
                   "several fine-tunes of one base share one reading of the base")
    p.add_argument("-o", "--output", required=True, help="artifact path (.dvz); with several folders, a folder "
                   "that gets <folder name>.dvz for each")
    p.add_argument("--codec", default=None,
                   help="codec id (see `modelcodecs codecs`; default fmdelta, which is fmdelta-nobase without --base)")
    p.add_argument("--base", help="base model folder (needed by base-conditioned codecs)")
    p.add_argument("--allow-unmatched-base", action="store_true", help="compress even when the base shares no "
                   "tensor, or under half of the tensor bytes, with the fine-tune (refused otherwise)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="codec option")
    p.add_argument("--calibration-text", help="UTF-8 text for codecs that train while compressing (bitdelta)")
    p.add_argument("--prior", help="prior folder (LM-GC: a local causal LM; default: the built-in model)")
    common(p)
    p.set_defaults(func=_cmd_compress)

    p = sub.add_parser("decompress", help="restore the fine-tuned folder from an artifact (or several)")
    p.add_argument("artifact", nargs="+", help="artifact(s); several made against one base share its reading")
    p.add_argument("-o", "--output", required=True, help="output folder (must not exist or be empty); with "
                   "several artifacts, a folder that gets one restored folder per artifact, named after it")
    p.add_argument("--base", help="base model folder the artifact was made against")
    p.add_argument("--prior", help="prior folder the artifact was coded with, where it is now (LM-GC)")
    common(p)
    p.set_defaults(func=_cmd_decompress)

    p = sub.add_parser("verify", help="decode in memory and check every recorded hash")
    p.add_argument("artifact")
    p.add_argument("reference", nargs="?", help="fine-tuned folder whose files must match the artifact")
    p.add_argument("--base", help="base model folder the artifact was made against")
    p.add_argument("--manifest", help="JSON manifest of the original files' hashes (`modelcodecs manifest`), kept "
                                      "outside the artifact: the restored files must match it")
    p.add_argument("--prior", help="prior folder the artifact was coded with, where it is now (LM-GC)")
    common(p)
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("manifest", help="write the sha256 of every file of a model folder (to verify against)")
    p.add_argument("folder")
    p.add_argument("-o", "--output", help="write to this file (must not exist) instead of stdout")
    p.set_defaults(func=_cmd_manifest)

    p = sub.add_parser("inspect", help="show what an artifact holds (from its index alone)")
    p.add_argument("artifact")
    common(p, threads=False, progress=False)
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("codecs", help="list the codecs and their options")
    common(p, threads=False, progress=False)
    p.set_defaults(func=_cmd_codecs)

    from . import series_cli

    series_cli.add_parser(sub, common)
    from . import tensorstore_cli

    tensorstore_cli.add_parser(sub, common)

    # `bench` is dispatched before parsing (it has its own parser); listed here for --help.
    sub.add_parser("bench", help="ratio and MB/s of every codec on a pair, side by side (bench --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _run(_cmd_bench, argv[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `verify OUT.dvz --base B REFERENCE`: argparse leaves a positional given after an option unparsed
    if args.command == "verify" and args.reference is None and len(extra) == 1 and not extra[0].startswith("-"):
        args.reference, extra = extra[0], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.show_progress = not getattr(args, "quiet", True) and not getattr(args, "json", False) and sys.stderr.isatty()
    return _run(args.func, args)


def _run(func, arg) -> int:
    try:
        return func(arg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModelCodecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head`
        return 0
    except OSError as exc:
        print(f"error: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; nothing partial was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
