"""The folder tree shows the pipeline: each stage imports only from the stages below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mailer"
BELOW = {
    "web": {"delivery", "audience", "compose", "top"},
    "delivery": {"audience", "compose", "top"},
    "audience": {"top"},
    "compose": {"top"},
    "top": {"top"},
}
"""What each stage may import; `top` is settings, errors, urls and config_report (cli sits above all)."""
TOP_MODULES = {
    "settings",
    "settings_sources",
    "toml_lines",
    "errors",
    "urls",
    "wording",
    "config_report",
    "__init__",
    "__main__",
}


def _stage_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "mailer" or len(parts) < 2:
        return None
    if parts[1] in BELOW:
        return parts[1]
    return "top" if parts[1] in TOP_MODULES else parts[1]


def _imports(path: Path) -> list[str]:
    """Absolute names of what the module imports; relative imports are resolved against its package."""
    package = ["mailer", *path.relative_to(PACKAGE).parent.parts]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            found.append(module)
            found.extend(f"{module}.{alias.name}" for alias in node.names if module == "mailer")
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return found


def _modules() -> list[Path]:
    return sorted(
        p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts and p.name not in {"cli.py", "__main__.py"}
    )


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    relative = path.relative_to(PACKAGE)
    stage = relative.parts[0] if len(relative.parts) > 1 else "top"
    upward = [
        module
        for module in _imports(path)
        if (target := _stage_of(module)) is not None and target != stage and target not in BELOW[stage]
    ]
    assert upward == [], f"{relative} ({stage}) imports from a stage above it: {upward}"


def test_every_module_sits_in_a_stage_folder() -> None:
    loose = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in TOP_MODULES | {"cli"})
    assert loose == [], f"modules outside compose/, audience/, delivery/, web/: {loose}"
