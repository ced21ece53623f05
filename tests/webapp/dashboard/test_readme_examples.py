"""The README's REST examples run, as written, with curl against a fresh demo served by a live server, and the
README says how many jobs the demo has (issue 11 §6)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from unittest import mock

import pytest
from django.core.management import call_command

from tests.factories import tiny_model_write
from webapp.jobs.models import Job
from webapp.registry.models import Artifact

README = Path(__file__).resolve().parents[3] / "README.md"
COMMAND = "webapp.dashboard.management.commands.deltavault_demo"
WORDS = {5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}


def _fake_pair(root: Path) -> tuple[Path, Path]:
    base = tiny_model_write(root / "base", seed=1)
    tiny_model_write(root / "finetuned", seed=2, base=base)
    return root / "base", root / "finetuned"


def _rest_block() -> str:
    text = README.read_text()
    section = text[text.index("## REST API"):]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def demo(dv_dirs):
    with mock.patch(f"{COMMAND}.make_pair", side_effect=_fake_pair):
        call_command("deltavault_demo", stdout=open("/dev/null", "w"))


@pytest.mark.django_db(transaction=True, reset_sequences=True)
@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_the_readme_rest_examples_run_against_a_fresh_demo(demo, live_server, tmp_path):
    jobs = Job.objects.count()
    assert f"{WORDS[jobs]} finished jobs" in README.read_text(), f"the demo has {jobs} jobs"
    assert Artifact.objects.get(pk=1).codec_id == "fmdelta"

    script = _rest_block().replace("http://127.0.0.1:8000", live_server.url)
    # Every curl fails the script on an HTTP error; the script says which job it made.
    wrapped = ("set -euo pipefail\ncurl() { command curl --fail-with-body \"$@\"; }\n" + script
               + '\necho "JOB=$JOB"\n')
    with mock.patch("webapp.jobs.services.run_job_task"):
        done = subprocess.run(["bash", "-c", wrapped], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    job_id = int(re.search(r"JOB=(\d+)", done.stdout).group(1))
    assert re.search(rf"job {job_id} on a fresh demo", script)
    assert not Job.objects.filter(pk=job_id).exists()  # cancelled, then deleted by the last example
    downloads = list(tmp_path.glob("*.dvz"))
    assert len(downloads) == 1 and downloads[0].stat().st_size == Artifact.objects.get(pk=1).compressed_bytes
