import os

import pytest

from webapp.core.exceptions import ApplicationError
from webapp.core.paths import path_resolve_in_roots


class PathResolveTests:
    def test_inside_absolute_and_relative(self, tmp_path):
        root = tmp_path / "root"
        (root / "m").mkdir(parents=True)
        assert path_resolve_in_roots(str(root / "m"), roots=[root]) == (root / "m").resolve()
        assert path_resolve_in_roots("m", roots=[root], kind="dir") == (root / "m").resolve()

    def test_second_root(self, tmp_path):
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir()
        (b / "f.txt").parent.mkdir()
        (b / "f.txt").write_text("x")
        assert path_resolve_in_roots(str(b / "f.txt"), roots=[a, b], kind="file") == (b / "f.txt").resolve()

    @pytest.mark.parametrize("raw", ["..", "m/../m", "/etc/passwd", "link", "link/inner", "prefix-sibling"])
    def test_refused(self, tmp_path, raw):
        root = tmp_path / "root"
        (root / "m").mkdir(parents=True)
        outside = tmp_path / "outside"
        (outside / "inner").mkdir(parents=True)
        os.symlink(outside, root / "link")
        (tmp_path / "root-sibling").mkdir()
        if raw == "prefix-sibling":  # /x/root-sibling starts with /x/root as a string but is not inside it
            raw = str(tmp_path / "root-sibling")
        with pytest.raises(ApplicationError):
            path_resolve_in_roots(raw, roots=[root])

    def test_nul_and_empty(self, tmp_path):
        for raw in ("", "   ", "a\x00b"):
            with pytest.raises(ApplicationError):
                path_resolve_in_roots(raw, roots=[tmp_path])


class MissingPathMessageTests:
    """A missing path typed inside the roots says "does not exist" (issue 11 §6); outside, the roots are named."""

    def test_a_dangling_link_inside_the_roots_does_not_exist(self, tmp_path):
        root = tmp_path / "root"
        root.mkdir()
        os.symlink(tmp_path / "moved-away", root / "model")
        with pytest.raises(ApplicationError, match="does not exist"):
            path_resolve_in_roots(str(root / "model"), roots=[root])
        with pytest.raises(ApplicationError, match="does not exist"):
            path_resolve_in_roots("model/inner", roots=[root])

    def test_outside_does_not_name_the_roots(self, tmp_path):
        root = tmp_path / "root"
        root.mkdir()
        with pytest.raises(ApplicationError) as err:
            path_resolve_in_roots(str(tmp_path / "elsewhere"), roots=[root])
        assert str(root) not in err.value.message and "roots" not in err.value.extra
