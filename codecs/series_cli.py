"""``modelcodecs series ...``: checkpoint series from the command line (see :mod:`modelcodecs.series`)."""

from __future__ import annotations

import json

from . import series


def _out(args, payload: dict, text: str) -> None:
    print(json.dumps(payload, indent=2) if args.json else text)


def _compress(args) -> int:
    s = series.compress_series(args.run, args.output, keyframe_every=args.keyframe_every, interval=args.interval,
                               threads=args.threads).as_dict()
    lines = [f"{args.output}: {len(s['checkpoints'])} checkpoints, ratio {s['ratio']:.3f}x "
             f"({s['original_bytes']:,} -> {s['compressed_bytes']:,} bytes) in {s['seconds']:.1f} s"]
    lines += [f"  step {c['step']:>8}  {c['codec']:<15} base {str(c['base_step']):>8}  {c['original_bytes']:>14,} -> "
              f"{c['compressed_bytes']:>14,}" + (f"  coded without base: {', '.join(c['tensors_without_base'])}"
                                                 if c["tensors_without_base"] else "")
              for c in s["checkpoints"]]
    _out(args, s, "\n".join(lines))
    return 0


def _append(args) -> int:
    added = series.series_append(args.series, [(args.step, args.folder)], threads=args.threads)
    _out(args, {"added": added}, f"step {args.step} added ({added[0]['compressed_bytes']:,} bytes)")
    return 0


def _restore(args) -> int:
    r = series.restore_checkpoint(args.series, args.step, args.output, threads=args.threads)
    _out(args, r, f"{args.output}: step {r['step']} restored ({r['links']} artifacts decoded; every sha256 verified)")
    return 0


def _verify(args) -> int:
    r = series.verify_series(args.series, threads=args.threads)
    _out(args, r.as_dict(), f"{'OK' if r.ok else 'FAILED'}: {r.message} ({len(r.checkpoints)} checkpoints)")
    return 0 if r.ok else 1


def _delete(args) -> int:
    r = series.delete_checkpoint(args.series, args.step, threads=args.threads)
    _out(args, r, f"step {r['deleted']} deleted" + (f"; step {r['rebased']} re-coded" if r["rebased"] else ""))
    return 0


def _info(args) -> int:
    info = series.series_info(args.series)
    lines = [f"{args.series}: {len(info['checkpoints'])} checkpoints, keyframe every {info['keyframe_every']}, "
             f"ratio {info['ratio']:.3f}x ({info['original_bytes']:,} -> {info['compressed_bytes']:,} bytes)"]
    lines += [f"  step {c['step']:>8}  base {str(c['base_step']):>8}  links {c['links']:>3}  "
              f"{c['compressed_bytes']:>14,} bytes" for c in info["checkpoints"]]
    _out(args, info, "\n".join(lines))
    return 0


def add_parser(sub, common) -> None:
    """Register ``series`` and its subcommands on the main parser's subparsers."""
    p = sub.add_parser("series", help="checkpoint series: each checkpoint coded against the one before it")
    ssub = p.add_subparsers(dest="series_command", required=True)

    c = ssub.add_parser("compress", help="code a folder of checkpoint folders (checkpoint-100, ...) as a series")
    c.add_argument("run", help="folder whose subfolders are the checkpoints, named with their step")
    c.add_argument("-o", "--output", required=True, help="series folder (must not exist or be empty)")
    c.add_argument("--keyframe-every", type=int, default=8,
                   help="every N-th checkpoint is coded without a base: a restore decodes at most N (default 8)")
    c.add_argument("--interval", type=int, default=None, help="steps between checkpoints (default: first gap)")
    common(c, progress=False)
    c.set_defaults(func=_compress)

    a = ssub.add_parser("append", help="add the next checkpoint to a series")
    a.add_argument("series")
    a.add_argument("step", type=int)
    a.add_argument("folder")
    common(a, progress=False)
    a.set_defaults(func=_append)

    r = ssub.add_parser("restore", help="restore one checkpoint, byte for byte")
    r.add_argument("series")
    r.add_argument("step", type=int)
    r.add_argument("-o", "--output", required=True)
    common(r, progress=False)
    r.set_defaults(func=_restore)

    v = ssub.add_parser("verify", help="decode every checkpoint and check every hash")
    v.add_argument("series")
    common(v, progress=False)
    v.set_defaults(func=_verify)

    d = ssub.add_parser("delete", help="delete one checkpoint (the next one is re-coded first)")
    d.add_argument("series")
    d.add_argument("step", type=int)
    common(d, progress=False)
    d.set_defaults(func=_delete)

    i = ssub.add_parser("info", help="checkpoints, chains and sizes (from the manifest)")
    i.add_argument("series")
    common(i, threads=False, progress=False)
    i.set_defaults(func=_info)


__all__ = ["add_parser"]
