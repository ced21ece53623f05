"""Fixtures for the end-to-end tests: the real stack (tests/e2e/stack.py), accounts, a tiny model pair on disk and
a Chromium driven by Playwright (the Debian chromium, never a downloaded one)."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.stack import start_stack

CHROMIUM = os.environ.get("DELTAVAULT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
ACCOUNTS = {"users": [
    {"username": "alice", "password": "alice-e2e-password", "team": {"name": "Acme", "slug": "acme"}},
    {"username": "bob", "password": "bob-e2e-password", "team": {"name": "Other", "slug": "other"}},
]}
PASSWORDS = {u["username"]: u["password"] for u in ACCOUNTS["users"]}


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/bootstrap installs it)")
    stack = start_stack(tmp_path_factory.mktemp("e2e-home"))
    yield stack
    stack.close()


@pytest.fixture(scope="session")
def accounts(stack) -> dict:
    return stack.seed(ACCOUNTS)


def write_pair(root: Path, *, tensors: int, rows: int, cols: int, seed: int = 0) -> tuple[Path, Path]:
    """A base and a fine-tune (base + small noise on most tensors) as safetensors folders with a config.json."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    base, ft = {}, {}
    for i in range(tensors):
        w = torch.randn(rows, cols, generator=gen, dtype=torch.float32) * 0.02
        base[f"model.layers.{i}.mlp.weight"] = w
        delta = torch.randn(rows, cols, generator=gen, dtype=torch.float32) * 1e-4 if i % 4 else torch.zeros_like(w)
        ft[f"model.layers.{i}.mlp.weight"] = (w + delta).contiguous()
    base["model.norm.weight"] = torch.ones(cols)
    ft["model.norm.weight"] = torch.ones(cols)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": cols}
    dirs = []
    for name, tensors_ in (("base", base), ("finetuned", ft)):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        save_file(tensors_, str(folder / "model.safetensors"), metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps(config))
        dirs.append(folder)
    return dirs[0], dirs[1]


@pytest.fixture(scope="session")
def tiny_pair(stack) -> tuple[Path, Path]:
    """About 32 MB of fp32 in 16 tensors, in team acme's folder: enough for several progress updates."""
    return write_pair(stack.models_root / "acme" / "e2e-pair", tensors=16, rows=512, cols=1024)


@pytest.fixture(scope="session")
def big_pair(stack) -> tuple[Path, Path]:
    """A larger pair (about 160 MB of fp32) for jobs that must still be running when they are cancelled."""
    return write_pair(stack.models_root / "acme" / "e2e-big", tensors=40, rows=1024, cols=1024, seed=1)


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def context(browser, stack):
    context = browser.new_context(base_url=stack.base_url, accept_downloads=True,
                                  viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    yield context
    context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("DELTAVAULT_E2E_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _json(raw: bytes) -> dict:
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        return {"non_json_body": raw[:2000].decode(errors="replace")}


class Api:
    """A tiny REST client (urllib) for the stack."""

    def __init__(self, base_url: str, token: str):
        self.base_url, self.token = base_url, token

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers={
            "Authorization": f"Token {self.token}", "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())

    def get(self, path):
        return self.call("GET", path)

    def post(self, path, body=None):
        return self.call("POST", path, body or {})


@pytest.fixture(scope="session")
def api_alice(stack, accounts) -> Api:
    return Api(stack.base_url, accounts["alice"]["token"])


@pytest.fixture(scope="session")
def api_bob(stack, accounts) -> Api:
    return Api(stack.base_url, accounts["bob"]["token"])
