"""``modelcodecs store ...``: a content-addressed tensor store from the command line (see
:mod:`modelcodecs.tensorstore`): models put in one store share their identical tensors."""

from __future__ import annotations

import json
from pathlib import Path

from . import tensorstore


def _out(args, payload: dict, text: str) -> None:
    print(json.dumps(payload, indent=2) if args.json else text)


def _read_manifest(path: str) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _put(args) -> int:
    summary = tensorstore.store_model(args.model, args.root, threads=args.threads or 1)
    with open(args.output, "x", encoding="utf-8") as handle:
        json.dump(summary.manifest, handle)
    s = summary.as_dict()
    _out(args, s, f"{args.output}: {s['logical_bytes']:,} logical bytes in {s['tensors']} tensors; "
                  f"{s['written_bytes']:,} new bytes written, {s['deduplicated_bytes']:,} bytes already stored")
    return 0


def _restore(args) -> int:
    hashes = tensorstore.restore_model(_read_manifest(args.manifest), args.root, args.output,
                                       threads=args.threads or 1)
    _out(args, {"files": hashes}, f"{args.output}: {len(hashes)} files restored (every sha256 verified)")
    return 0


def _gc(args) -> int:
    """Remove the objects none of the given manifests needs (the models kept in the store)."""
    needed = {key for path in args.keep for key in tensorstore.manifest_keys(_read_manifest(path))}
    unused = [key for key, _ in tensorstore.iter_object_files(args.root) if key not in needed]
    removed = unused if args.dry_run else tensorstore.remove_objects(args.root, unused)
    verb = "would remove" if args.dry_run else "removed"
    _out(args, {"removed": removed, "dry_run": args.dry_run}, f"{verb} {len(removed)} objects no manifest needs")
    return 0


def add_parser(sub, common) -> None:
    """Register ``store`` and its subcommands on the main parser's subparsers."""
    p = sub.add_parser("store", help="tensor store: identical tensors of many models stored once")
    ssub = p.add_subparsers(dest="store_command", required=True)

    put = ssub.add_parser("put", help="store a model folder; write its manifest")
    put.add_argument("model", help="model folder")
    put.add_argument("--root", required=True, help="the store's folder")
    put.add_argument("-o", "--output", required=True, help="manifest file to write (must not exist)")
    common(put, progress=False)
    put.set_defaults(func=_put)

    restore = ssub.add_parser("restore", help="write a stored model back, byte for byte")
    restore.add_argument("manifest")
    restore.add_argument("--root", required=True)
    restore.add_argument("-o", "--output", required=True)
    common(restore, progress=False)
    restore.set_defaults(func=_restore)

    gc = ssub.add_parser("gc", help="remove the objects that none of the given manifests needs")
    gc.add_argument("--root", required=True)
    gc.add_argument("keep", nargs="*", help="manifests of the models the store keeps")
    gc.add_argument("--dry-run", action="store_true", help="only list what would go")
    common(gc, threads=False, progress=False)
    gc.set_defaults(func=_gc)


__all__ = ["add_parser"]
