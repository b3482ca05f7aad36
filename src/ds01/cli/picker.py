"""The framework picker of ``project-init`` on a terminal: first the framework, then one of its
versions, grouped by version and variant (runtime, devel, CPU …), only what runs on this host
unless asked, a page at a time so every screen fits a 24-row terminal.

The grouping (:func:`version_rows`, :func:`page`) is pure and tested; :func:`pick` asks.
"""

from __future__ import annotations

from typing import Any

PAGE = 14  # version rows per screen: + question, "more", "all", "back" and the answer < 24 rows
FRAMEWORK_NAMES = {"pytorch": "PyTorch", "tensorflow": "TensorFlow", "jax": "JAX", "python": "Python"}
VARIANT_TEXT = {
    "runtime": "runtime (lean)",
    "devel": "devel (+ CUDA compilers, headers)",
    "gpu": "GPU",
    "gpu-jupyter": "GPU + JupyterLab",
    "cpu": "CPU",
    "cpu-wheels": "CPU (wheels on the lab base)",
    "slim": "slim",
    "local": "the lab's base",
}
FIT_TEXT = {"gpu": "", "cpu": "", "cpu-only-here": "CPU only here", None: "does not run here"}


def _cuda_key(row: dict) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(row.get("cuda") or "0").split("."))
    except ValueError:
        return (0,)


def _version_key(row: dict) -> Any:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(str(row.get("framework_version")))
    except InvalidVersion:
        return Version("0")


def version_rows(entries: list[dict], framework: str, show_all: bool = False) -> list[dict]:
    """One row per (version, variant) of ``framework``, newest version first; of several CUDA
    builds the newest that runs here. Without ``show_all`` only rows that run here (GPU, CPU, or
    "CPU only here" on a host without a driver)."""
    best: dict[tuple[str, str], dict] = {}
    for e in entries:
        if e.get("framework") != framework or (e.get("local") and not e.get("pip")):
            continue  # the lab's plain base is the first choice of the framework question
        if not show_all and not usable(e):
            continue
        key = (str(e.get("framework_version")), str(e.get("variant")))
        cur = best.get(key)
        rank = (usable(e), _cuda_key(e))
        if cur is None or rank > (usable(cur), _cuda_key(cur)):
            best[key] = e
    order = {v: i for i, v in enumerate(VARIANT_TEXT)}
    # on a host without a driver the CPU build of a version comes first
    no_driver = any(e.get("fit") == "cpu-only-here" for e in best.values())
    return sorted(best.values(), key=lambda e: (_version_key(e), no_driver and e.get("fit") == "cpu",
                                                -order.get(str(e.get("variant")), 99)), reverse=True)


def usable(e: dict) -> bool:
    """Runs here and the admin allows it."""
    return bool(e.get("runnable")) and e.get("allowed", True) is not False


def row_label(e: dict) -> str:
    variant = str(e.get("variant"))
    text = VARIANT_TEXT.get(variant, "NGC " + variant[4:] if variant.startswith("ngc-") else variant)
    hw = f"cuda {e['cuda']}" if e.get("cuda") else "cpu"
    note = FIT_TEXT.get(e.get("fit"), "") if e.get("runnable") else f"needs driver ≥ {e.get('min_driver')}"
    if e.get("allowed") is False:
        note = "not allowed by the admin"
    return f"{e['framework_version']:<10} {text:<34} {hw:<10} {note}".rstrip()


def page(rows: list[dict], start: int) -> tuple[list[dict], bool]:
    """The rows of one screen from ``start``, and whether more follow."""
    return rows[start:start + PAGE], start + PAGE < len(rows)


def base_from_row(row: dict, tools: list[str]) -> dict:
    """What ``select_base`` would answer for this entry (the Dockerfile generator's input)."""
    return {**row, "label": row.get("image"), "tools": list(tools)}


def pick(data: dict) -> tuple[str | None, dict | None]:
    """Ask on the terminal: (``F==VER`` or None for the lab's CPU base, the chosen entry as a
    base for the Dockerfile, or None)."""
    import questionary

    from ds01.cli.prompts import ask

    entries = data.get("entries", [])
    here = {f: len(version_rows(entries, f)) for f in FRAMEWORK_NAMES}
    drv = data.get("driver_version")
    while True:
        choices = [questionary.Choice("CPU only: the lab's base image (python)", value="")]
        for f, name in FRAMEWORK_NAMES.items():
            n = here[f]
            choices.append(questionary.Choice(f"{name}  ({n} run here)" if n else f"{name}  (none run here)", value=f,
                                              disabled=None if n or f == "python" else "none run here"))
        host = f"driver {drv}" if drv else "no NVIDIA driver: CUDA images run on the CPU"
        fw = ask(questionary.select("Framework:", choices=choices, instruction=f"({host})"))
        if not fw:
            return None, None
        row = _pick_version(entries, fw)
        if row is not None:
            return f"{fw}=={row['framework_version']}", base_from_row(row, data.get("tools") or [])


def _pick_version(entries: list[dict], framework: str) -> dict | None:
    import questionary

    from ds01.cli.prompts import ask

    show_all, start = False, 0
    while True:
        rows = version_rows(entries, framework, show_all)
        shown, more = page(rows, start)
        choices: list[Any] = [questionary.Choice(row_label(e), value=("row", i + start),
                                                 disabled=None if usable(e) else "not here")
                              for i, e in enumerate(shown)]
        if more:
            choices.append(questionary.Choice("… older versions", value=("more", 0)))
        if not show_all:
            choices.append(questionary.Choice("… also those that do not run here", value=("all", 0)))
        choices.append(questionary.Choice("← back", value=("back", 0)))
        what, i = ask(questionary.select(f"{FRAMEWORK_NAMES[framework]} version:", choices=choices))
        if what == "row":
            return rows[i]
        if what == "back":
            return None
        if what == "more":
            start += PAGE
        else:
            show_all, start = True, 0
