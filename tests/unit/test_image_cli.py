"""CLI-side pieces of the image commands (no daemon)."""

from __future__ import annotations

from ds01.cli.commands import images as cli
from ds01.images.dockerfile import PRESETS, DockerfileSpec


def test_preset_names_match_the_generator():
    assert set(cli.PRESET_NAMES) == set(PRESETS)


def test_split_words():
    assert cli.split_words(("numpy pandas", "scipy,six", "")) == ["numpy", "pandas", "scipy", "six"]


def test_progress_plain_prints_every_line_and_cleans_steps(capsys):
    p = cli.Progress(tty=False)
    p.feed('Step 2/3 : RUN set -eu;     if [ -n "${DS01_CA_PEM:-}" ]; then x; fi;     pip install a;'
           '     rm -f /tmp/ds01-ca.pem\nhello ')
    p.feed("world\n\x1b[91mred\x1b[0m\n")
    p.close()
    assert capsys.readouterr().out.splitlines() == ["Step 2/3 : RUN pip install a", "hello world", "red"]


def test_progress_tty_keeps_step_lines(capsys):
    p = cli.Progress(tty=True)
    p.feed("Step 1/2 : FROM x\nDownloading a\nDownloading b\nStep 2/2 : RUN y\n")
    p.close()
    out = capsys.readouterr().out
    assert "[1/2]" in out and "[2/2]" in out and "Downloading b" in out


def test_requirements_added_to_an_unmodified_generated_dockerfile():
    text = DockerfileSpec(base_image="ds01/base:latest", project="demo", pip_packages=("six",)).render()
    new = cli._reconstructed_without_req(text, "demo")
    assert new is not None and "COPY requirements.txt /opt/ds01/requirements.txt" in new
    assert cli._reconstructed_without_req(text + "# mine\n", "demo") is None


def test_image_list_footer_counts_the_users_own_bytes_once():
    from ds01.cli.commands.images import own_bytes_line

    assert own_bytes_line(None) is None and own_bytes_line({"measured": False}) is None
    line = own_bytes_line({"measured": True, "image_bytes": 3 * 2**20, "shared_layers_counted_once": True})
    assert "3" in line and "MiB" in line and "shared layers counted once" in line
