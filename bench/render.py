"""How long each render stage takes for both seed issues, in process and as a whole `mailer render`.

Run: .venv/bin/python bench/render.py [--runs 20]
Baselines in the same run: the interpreter's own start-up (for the command) and, when the
css-inline package is installed, css-inline doing premailer's job on the same HTML.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mailer.compose.build import output_files, write_atomically
from mailer.compose.load import load_issue
from mailer.compose.render import PLACEHOLDERS, _mjml_to_html, email_context, inline_css, render_issue
from mailer.compose.templates import default_templates_dir, environment
from mailer.compose.text import render_text
from mailer.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]


def median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    settings = load_settings(ROOT / "mailer.toml")
    env = environment(default_templates_dir())
    css = (default_templates_dir() / "inline.css").read_text()
    template = env.get_template("issue.mjml")
    try:
        import css_inline  # type: ignore[import-not-found]
    except ImportError:
        css_inline = None

    print(f"median of {runs} runs, milliseconds")
    print(
        f"{'issue':8} {'load':>7} {'jinja':>7} {'mjml':>7} {'inline':>7} {'text':>7} {'write':>7} {'total':>7} {'html KB':>8}"
    )
    for slug in ("2016-02", "2015-10"):
        path = ROOT / "issues" / f"{slug}.yaml"
        issue = load_issue(path)
        context = email_context(issue, slug, settings)
        source = template.render(web=False, recipient=PLACEHOLDERS, **context)
        html = _mjml_to_html(source)
        rendered = render_issue(issue, slug, settings)
        with tempfile.TemporaryDirectory() as tmp:
            files = {p: c for p, (c, _) in output_files(rendered, Path(tmp)).items()}
            row = {
                "load": median_ms(lambda: load_issue(path), runs),
                "jinja": median_ms(lambda: template.render(web=False, recipient=PLACEHOLDERS, **context), runs),
                "mjml": median_ms(lambda: _mjml_to_html(source), runs),
                "inline": median_ms(lambda: inline_css(html, css), runs),
                "text": median_ms(lambda: render_text(env, recipient=PLACEHOLDERS, **context), runs),
                "write": median_ms(lambda: write_atomically(files), runs),
            }
        total = median_ms(lambda: render_issue(load_issue(path), slug, settings), runs)
        size = len(rendered.email_html.encode()) / 1024
        print(f"{slug:8} " + " ".join(f"{v:7.2f}" for v in row.values()) + f" {total:7.2f} {size:8.1f}")
        print(f"{'':8} (total = load + both HTML renders + text; the web version repeats jinja, mjml and inline)")
        if css_inline is not None:
            inliner = css_inline.CSSInliner(keep_style_tags=True, extra_css=css, load_remote_stylesheets=False)
            baseline = median_ms(lambda: inliner.inline(html), runs)
            print(f"{'':8} baseline css-inline on the same HTML: {baseline:.2f} ms (premailer {row['inline']:.2f} ms)")

    def command(*args: str) -> float:
        return median_ms(lambda: subprocess.run(args, cwd=ROOT, check=True, capture_output=True), max(3, runs // 4))

    with tempfile.TemporaryDirectory() as tmp:
        whole = command(
            sys.executable,
            "-m",
            "mailer",
            "render",
            "issues/2016-02.yaml",
            "issues/2015-10.yaml",
            "-o" if False else "--config",
            "mailer.toml",
        )
        startup = command(sys.executable, "-c", "pass")
        imports = command(sys.executable, "-c", "import mailer.cli, mailer.compose.build")
        del tmp
    print(f"\nwhole `mailer render` of both issues: {whole:.0f} ms")
    print(f"baseline: python start-up {startup:.0f} ms; importing mailer's modules {imports:.0f} ms")


if __name__ == "__main__":
    main()
