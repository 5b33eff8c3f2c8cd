"""The layer of a test is its folder (tests/conftest.py): every test gets its folder's marker, and a
test marked for another layer, or outside the layer folders, fails the collection by name.

Each case runs pytest in process on a small tree of its own whose conftest is the repo's hook."""

from __future__ import annotations

import pytest

TREE_CONFTEST = "from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n"
INI = """[pytest]
addopts = --strict-markers -p no:cacheprovider
markers =
    unit: u
    integration: i
    e2e: e
"""


@pytest.fixture
def tree(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    pytester.makeconftest(TREE_CONFTEST)
    return pytester


def write(pytester: pytest.Pytester, files: dict[str, str]) -> None:
    for path, body in files.items():
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("import pytest\n\n" + body)


LAYERED = {
    "tests/unit/test_u.py": "def test_u1(): pass\n\n@pytest.mark.unit\ndef test_u2(): pass\n",
    "tests/unit/deep/er/test_deep.py": "def test_deep(): pass\n",
    "tests/integration/test_i.py": "pytestmark = pytest.mark.integration\n\ndef test_i(): pass\n",
    "tests/e2e/test_e.py": "def test_e(): pass\n",
}


@pytest.mark.parametrize(
    ("layer", "selected"),
    [
        ("unit", ["test_u.py::test_u1", "test_u.py::test_u2", "test_deep.py::test_deep"]),
        ("integration", ["test_i.py::test_i"]),
        ("e2e", ["test_e.py::test_e"]),
        ("not unit", ["test_i.py::test_i", "test_e.py::test_e"]),
    ],
)
def test_every_test_gets_the_marker_of_its_folder(tree, layer, selected):
    write(tree, LAYERED)
    result = tree.runpytest("-m", layer, "-v")
    result.assert_outcomes(passed=len(selected), deselected=5 - len(selected))
    passed, _, _ = result.reprec.listoutcomes()  # type: ignore[attr-defined]
    assert sorted(r.nodeid.rsplit("/", 1)[-1] for r in passed) == sorted(selected)


@pytest.mark.parametrize(
    ("path", "body", "marked"),
    [
        (
            "tests/unit/test_x.py",
            "pytestmark = pytest.mark.integration\n\ndef test_x(): pass\n",
            "integration",
        ),
        ("tests/integration/test_x.py", "@pytest.mark.unit\ndef test_x(): pass\n", "unit"),
        ("tests/e2e/test_x.py", "@pytest.mark.integration\ndef test_x(): pass\n", "integration"),
        (
            "tests/unit/deep/test_x.py",
            "@pytest.mark.parametrize('n', [1, pytest.param(2, marks=pytest.mark.e2e)])\n"
            "def test_x(n): pass\n",
            "e2e",
        ),
    ],
)
def test_a_marker_of_another_layer_fails_the_collection_naming_the_test(tree, path, body, marked):
    write(tree, {**LAYERED, path: body})
    result = tree.runpytest("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    folder = path.split("/")[1]
    [line] = [ln for ln in result.errlines if "test_x" in ln]  # only the culprit is named
    assert line.strip().startswith(path + "::test_x")
    assert f"marked {marked} but its folder makes it {folder}" in line


def test_a_test_outside_the_layer_folders_fails_the_collection(tree):
    outside = {"tests/test_top.py": "def test_top(): pass\n", "tests/misc/test_m.py": "def test_m(): pass\n"}
    write(tree, {**LAYERED, **outside})
    result = tree.runpytest("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    named = [ln.strip() for ln in result.errlines if "not in a layer folder" in ln]
    assert [ln.split(":", 1)[0] for ln in named] == ["tests/misc/test_m.py", "tests/test_top.py"]


def test_every_test_of_this_run_carries_exactly_its_folders_layer(request):
    """The check over this session's own items: the hook ran on the real tree."""
    from tests.conftest import LAYERS, layer_of

    root = request.config.rootpath / "tests"
    items = request.session.items
    assert request.node in items
    for item in items:
        layer = layer_of(item.path, root)
        assert layer is not None, item.nodeid
        assert {m.name for m in item.iter_markers() if m.name in LAYERS} == {layer}, item.nodeid
