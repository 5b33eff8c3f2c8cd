"""Settings are declared once (shared.settings.setting) and docs/configuration.md is rendered from the
declarations: the committed page matches the code, every from_env reads exactly what its class
declares, and every declared default and example is a value its parser accepts."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from shared.dev import settings_doc
from shared.lambda_text import ObservabilitySettings
from shared.pipeline.settings import PipelineSettings
from shared.search.api import SearchApiSettings
from shared.settings import TextSettings, declared, render
from shared.worker.settings import WorkerSettings

pytestmark = pytest.mark.unit

BUILDERS: dict[type, Callable[[Mapping[str, str]], Any]] = {
    PipelineSettings: PipelineSettings.from_env,
    TextSettings: TextSettings.from_env,
    ObservabilitySettings: ObservabilitySettings.from_env,
    SearchApiSettings: SearchApiSettings.from_env,
    WorkerSettings: lambda env: WorkerSettings.from_env(env, cuda_available=lambda: True),
}


def minimal(cls: type) -> dict[str, str]:
    """The required variables, set."""
    return {d.env: d.example for d in declared(cls) if d.required}


class RecordingEnv(Mapping[str, str]):
    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self.values[key]

    def get(self, key, default=None):
        self.read.add(key)
        return self.values.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def test_configuration_md_is_what_the_declarations_render():
    assert settings_doc.OUTPUT.read_text() == settings_doc.render(), (
        f"docs/configuration.md is stale; regenerate it: {settings_doc.COMMAND}"
    )


def test_every_settings_class_is_documented():
    assert {s.cls for s in settings_doc.SECTIONS} == set(BUILDERS)


def test_the_check_command_fails_on_a_stale_file(tmp_path, capsys):
    out = tmp_path / "configuration.md"
    assert settings_doc.main(["--check", "--output", str(out)]) == 1
    assert settings_doc.COMMAND in capsys.readouterr().err
    assert settings_doc.main(["--output", str(out)]) == 0
    assert settings_doc.main(["--check", "--output", str(out)]) == 0


@pytest.mark.parametrize("cls", list(BUILDERS), ids=lambda c: c.__name__)
def test_from_env_reads_exactly_the_declared_variables(cls):
    names = [d.env for d in declared(cls)]
    assert len(names) == len(set(names))
    env = RecordingEnv(minimal(cls))
    BUILDERS[cls](env)
    assert env.read == set(names)


@pytest.mark.parametrize("cls", list(BUILDERS), ids=lambda c: c.__name__)
def test_declared_defaults_and_examples_parse(cls):
    """A ConfigError's example is itself valid, and the page's default reads back as the default."""
    for d in declared(cls):
        assert d.setting.doc and "\n" not in d.setting.doc, d.env
        d.setting.parse(d.example)
        if not d.required and d.setting.shown_default is None and d.default != "":
            assert d.setting.parse(render(d.default)) == d.default, d.env


@pytest.mark.parametrize("cls", [PipelineSettings, TextSettings, ObservabilitySettings])
def test_an_unset_environment_gives_the_dataclass_defaults(cls):
    required = {d.attr: d.example for d in declared(cls) if d.required}
    assert BUILDERS[cls](minimal(cls)) == cls(**required)
