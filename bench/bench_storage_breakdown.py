"""How long the team Storage page's breakdown (``team_storage_breakdown``) takes for a team that stores a series
of checkpoints compressed: ``--models`` models of ``--tensors`` tensor-store objects each, a ``--shared`` fraction
of them the same objects in every checkpoint (frozen layers), plus one restored copy per model. CPU seconds of the
selector (process user + system, best of ``--repeat``) beside the wall time, with the load average.

    python bench/bench_storage_breakdown.py [--models 100] [--tensors 300] [--shared 0.5] [--repeat 5]

Runs on a fresh SQLite file in a temporary DELTAVAULT_HOME (migrated first); nothing else is touched.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--tensors", type=int, default=300)
    parser.add_argument("--shared", type=float, default=0.5, help="fraction of objects shared with the previous one")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    home = tempfile.mkdtemp(prefix="dv-bench-storage-")
    os.environ.update(DELTAVAULT_HOME=home, DATABASE_URL=f"sqlite:///{home}/bench.sqlite3",
                      DJANGO_SETTINGS_MODULE="webapp.settings.test")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from webapp.registry.models import ModelEntry, StoredTensor, StoredTensorRef
    from webapp.registry.storage import model_restored_cache
    from webapp.registry.storage_selectors import team_storage_breakdown
    from webapp.teams.services import team_create

    team = team_create(name="Bench", owner=get_user_model().objects.create_user(username="bench", password="x"))
    kept = int(args.tensors * args.shared)
    previous: list[StoredTensor] = []
    for index in range(args.models):
        carried = previous[:kept]  # the first checkpoint shares nothing
        new = [StoredTensor(team=team, key=f"{index:08d}{n:056d}", logical_bytes=4_000_000, stored_bytes=3_000_000)
               for n in range(args.tensors - len(carried))]
        objects = carried + StoredTensor.objects.bulk_create(new)
        model = ModelEntry.objects.create(team=team, name=f"step-{index}", path=f"/srv/step-{index}",
                                          layout="safetensors", storage=ModelEntry.Storage.COMPRESSED,
                                          store_manifest={"step": index}, total_bytes=4_000_000 * args.tensors)
        StoredTensorRef.objects.bulk_create([StoredTensorRef(tensor=t, model=model) for t in objects])
        copy = model_restored_cache(model)
        copy.mkdir(parents=True)
        (copy / "model.safetensors").write_bytes(b"\0" * 4096)
        previous = objects
    refs = StoredTensorRef.objects.filter(model__team=team).count()

    cpu, wall = [], []
    for _ in range(args.repeat):
        c0, w0 = _cpu_s(), time.perf_counter()
        view = team_storage_breakdown(team=team)
        cpu.append(_cpu_s() - c0)
        wall.append(time.perf_counter() - w0)
    totals = view["totals"]
    print(f"team_storage_breakdown: {args.models} models, {StoredTensor.objects.count()} objects, {refs} references, "
          f"{len(view['restored'])} restored copies ({settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]})")
    print(f"  CPU {min(cpu) * 1000:.0f} ms (best of {args.repeat}; median {sorted(cpu)[len(cpu) // 2] * 1000:.0f} ms), "
          f"wall {min(wall) * 1000:.0f} ms; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  logical {totals['logical_bytes']:,} B, on disk {totals['on_disk_bytes']:,} B, "
          f"shared {totals['shared_bytes']:,} B, ratio {totals['ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
