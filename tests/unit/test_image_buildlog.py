"""Build output as structured events: the daemon parses the engine's stream once
(``ds01.images.buildlog``), the CLI only renders the events (``ds01.cli.building``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ds01.cli.building import Progress
from ds01.errors import BuildFailed
from ds01.images.buildlog import BuildEvents

# The classic builder's stream for a two-RUN Dockerfile (captured from Engine, ids kept): step
# lines arrive without their newline, and a step's output need not end in one.
CA_RUN = ('RUN set -eu; if [ -n "${DS01_CA_PEM:-}" ]; then printf %s "$DS01_CA_PEM" > /tmp/ds01-ca.pem; fi; '
          'echo hello; printf "no newline"; rm -f /tmp/ds01-ca.pem')
CAPTURED = [
    "Step 1/3 : FROM ds01-test/busybox:latest", "\n", " ---> 13869f6fe2e3\n",
    "Step 2/3 : " + CA_RUN, "\n", " ---> Running in c70b8b8e5032\n", "hello\nno newline",
    "Removing intermediate container c70b8b8e5032\n", " ---> 92aa4b470195\n",
    "Step 3/3 : RUN echo bye", "\n", " ---> Running in 9956f8196ebb\n", "\x1b[32mbye\x1b[0m\n",
    "Removing intermediate container 9956f8196ebb\n", " ---> c6efadcc684b\n",
    "Successfully built c6efadcc684b\n", "tail without newline",
]
EVENTS = [
    {"step": 1, "of": 3, "text": "FROM ds01-test/busybox:latest"},
    {"line": " ---> 13869f6fe2e3"},
    {"step": 2, "of": 3, "text": 'RUN echo hello; printf "no newline"'},  # the CA prologue cut
    {"line": " ---> Running in c70b8b8e5032"},
    {"line": "hello"},
    {"line": "no newlineRemoving intermediate container c70b8b8e5032"},
    {"line": " ---> 92aa4b470195"},
    {"step": 3, "of": 3, "text": "RUN echo bye"},
    {"line": " ---> Running in 9956f8196ebb"},
    {"line": "bye"},  # ANSI colours removed
    {"line": "Removing intermediate container 9956f8196ebb"},
    {"line": " ---> c6efadcc684b"},
    {"line": "Successfully built c6efadcc684b"},
    {"line": "tail without newline"},  # the unfinished last line, at flush
]


def parse(chunks, limit=None) -> list[dict]:
    ev = BuildEvents(limit=limit)
    out = [e for c in chunks for e in ev.feed(c)]
    return out + ev.flush()


def test_a_captured_engine_stream_becomes_step_and_line_events():
    assert parse(CAPTURED) == EVENTS


def test_output_past_the_limit_is_announced_once_and_dropped():
    out = parse(["Step 1/1 : RUN x\n", "a" * 30, "b" * 30 + "\n", "never shown\n"], limit=50)
    assert out[0] == {"step": 1, "of": 1, "text": "RUN x"}
    assert out[1] == {"line": "a" * 30 + "b" * 30}
    # the notice starts on a line of its own (here after an empty one, as before events)
    assert out[2] == {"line": ""} and out[3]["line"].startswith("[ds01: the build printed more than 0 MiB")
    assert len(out) == 4


def render(events, tty: bool, capsys) -> str:
    p = Progress(tty=tty)
    for e in events:
        p.event(e)
    p.close()
    return capsys.readouterr().out


def test_cli_renders_the_events_as_plain_lines(capsys):
    out = render(EVENTS, False, capsys).splitlines()
    assert out[0] == "Step 1/3 : FROM ds01-test/busybox:latest"
    assert out[2] == 'Step 2/3 : RUN echo hello; printf "no newline"'
    assert out[4:6] == ["hello", "no newlineRemoving intermediate container c70b8b8e5032"]
    assert len(out) == len(EVENTS)


def test_cli_renders_the_events_on_a_terminal(capsys):
    out = render(EVENTS, True, capsys)
    assert "[1/3] " in out and "[2/3] " in out and "RUN echo hello" in out and "[3/3] " in out
    assert "bye" in out and "tail without newline" in out
    assert "13869f6fe2e3" not in out and "Successfully built" not in out  # the engine's bookkeeping


@pytest.mark.parametrize("tty", [False, True])
def test_cli_output_from_events_equals_the_output_from_raw_text(tty, capsys):
    """What the CLI shows is the same whether it gets events or (from an older daemon) the raw
    stream it used to parse itself."""
    p = Progress(tty=tty)
    for c in CAPTURED:
        p.feed(c)
    p.close()
    raw = capsys.readouterr().out
    assert render(parse(CAPTURED), tty, capsys) == raw


class _Rt:
    def __init__(self, msgs):
        self.msgs = msgs

    def build_image(self, context, **kw):
        yield from self.msgs


def _engine_build(msgs):
    """The service's engine step over a fake engine: its generator (events, returns the id)."""
    from ds01.models.config import Config
    from ds01.runtime.base import RuntimeImages
    from ds01.services.images import ImageService

    RuntimeImages.register(_Rt)
    svc = ImageService(SimpleNamespace(config=Config(), runtime=_Rt(msgs), emit=lambda *a, **k: None))
    plan = SimpleNamespace(context=SimpleNamespace(tar=None), labels={}, buildargs={}, nocache=False, memory=None,
                           who=None, project="p", actor=None)
    return svc._engine_build(plan, None)


def test_the_service_yields_the_events_and_returns_the_image_id():
    gen = _engine_build([{"stream": c} for c in CAPTURED] + [{"id": "sha256:c6ef"}])
    out = []
    with pytest.raises(StopIteration) as stop:
        while True:
            out.append(next(gen))
    assert out == EVENTS and stop.value.value == "sha256:c6ef"


def test_a_failed_build_shows_the_unfinished_line_then_fails_with_the_step():
    gen = _engine_build([{"stream": "Step 1/1 : RUN pip install nope\n"}, {"stream": "ERROR: No matching distribution"},
                         {"error": "The command '/bin/sh -c pip install nope' returned a non-zero code: 1"}])
    assert next(gen) == {"step": 1, "of": 1, "text": "RUN pip install nope"}
    assert next(gen) == {"line": "ERROR: No matching distribution"}  # flushed before the failure
    with pytest.raises(BuildFailed) as e:
        next(gen)
    assert e.value.details["step"] == "Step 1/1 : RUN pip install nope"
    assert "exited with code 1" in e.value.message
