"""The user's CLI defaults (~/.config/ds01/config.yaml): job-submit's mail default (issue 14)."""

from __future__ import annotations

import pytest

from ds01.cli import user_config
from ds01.errors import InvalidInput


def test_missing_file_gives_defaults(tmp_path):
    assert user_config.load(str(tmp_path / "none.yaml")) == {"mail_on_job_end": False}


def test_path_follows_xdg_config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert user_config.path() == str(tmp_path / "ds01" / "config.yaml")


@pytest.mark.parametrize("text, want", [("mail_on_job_end: true\n", True), ("mail_on_job_end: false\n", False),
                                        ("# nothing\n", False), ("", False)])
def test_values(tmp_path, text, want):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    assert user_config.load(str(f))["mail_on_job_end"] is want


@pytest.mark.parametrize("text, says", [("mail_on_jobs_end: true\n", "unknown key 'mail_on_jobs_end'"),
                                        ("mail_on_job_end: yes please\n", "true or false"),
                                        ("- a\n", "key: value"), ("a: [\n", "not valid YAML")])
def test_mistakes_name_the_file_and_key(tmp_path, text, says):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(InvalidInput) as e:
        user_config.load(str(f))
    assert says in e.value.message and str(f) in e.value.message
