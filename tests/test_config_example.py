"""config.example.toml documents every key, with the real defaults."""

from __future__ import annotations

import tomllib
from pathlib import Path

from service.core.config import Settings, load_settings


def test_example_lists_every_key_with_its_default(repo_root: Path) -> None:
    example = tomllib.loads((repo_root / "config.example.toml").read_text(encoding="utf-8"))
    defaults = Settings().model_dump(mode="json")
    for section, fields in defaults.items():
        assert section in example, f"section [{section}] missing from config.example.toml"
        for key, value in fields.items():
            assert key in example[section], f"{section}.{key} missing from config.example.toml"
            shown = example[section][key]
            if key in ("auth_token", "password"):
                assert shown == "", f"{section}.{key} must be empty in the example"
            else:
                assert shown == value, f"{section}.{key}: example {shown!r} != default {value!r}"
    for section, fields in example.items():
        assert section in defaults, f"[{section}] in the example is not a setting"
        for key in fields:
            assert key in defaults[section], f"{section}.{key} in the example is not a setting"


def test_example_loads(repo_root: Path) -> None:
    settings = load_settings(repo_root / "config.example.toml", environ={})
    assert settings == Settings()
