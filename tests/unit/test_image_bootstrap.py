"""The offline base image's pure parts."""

from __future__ import annotations

import pytest

from ds01.errors import InvalidInput
from ds01.images.bootstrap import apt_sources, import_changes, mirrors_from_sources, validate_suite


def test_import_changes():
    ch = import_changes()
    assert ch[0] == "ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert "WORKDIR /workspace" in ch and 'CMD ["/bin/bash"]' in ch
    assert any(c.startswith("LABEL ds01.base=bootstrap") for c in ch)


DEB822 = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
"""


def test_mirrors_deb822_and_third_party_ignored():
    third = "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n"
    assert mirrors_from_sources([third, DEB822]) == ("http://deb.debian.org/debian",
                                                     "http://deb.debian.org/debian-security")


def test_mirrors_one_line_with_options():
    line = "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example.org/debian/ bookworm main\n"
    assert mirrors_from_sources([line]) == ("http://mirror.example.org/debian", None)


def test_mirrors_none():
    assert mirrors_from_sources(["# nothing\n"]) == (None, None)


def test_apt_sources():
    text = apt_sources("bookworm", "http://m/debian", "http://m/debian-security")
    assert "Suites: bookworm bookworm-updates" in text and "Suites: bookworm-security" in text
    assert "debian-security" not in apt_sources("bookworm", "http://m/debian", None)


@pytest.mark.parametrize("bad", ["", "Bookworm", "bookworm; rm -rf /", "../x", "a" * 40])
def test_suite_validation(bad):
    with pytest.raises(InvalidInput):
        validate_suite(bad)
    assert validate_suite("trixie") == "trixie"
