"""``python -m labelloop_tools``: the development commands (``make run``'s demo, ``make bench``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from labelloop.cli import configure_logging
from labelloop.config import get_settings
from labelloop_tools.demo import (
    CHECKOUT_SAMPLES,
    Samples,
    SamplesNotFoundError,
    run_demo,
    run_model_loop_demo,
)

app = typer.Typer(
    help="labelloop's development tools: the end-to-end demo and the benchmarks.",
    no_args_is_help=True,
)
console = Console(stderr=True)


@app.command("demo")
def demo(
    samples: Annotated[
        Path,
        typer.Option(help="The sample data: frames/, loop/ and loop-labels.json."),
    ] = CHECKOUT_SAMPLES,
) -> None:
    """Run the end-to-end job on the running local stack (``make run`` calls this)."""
    try:
        bundled = Samples.locate(samples)
    except SamplesNotFoundError as error:
        console.print(f"[red]demo failed:[/red] {error}")
        raise typer.Exit(2) from error
    settings = get_settings()
    out_dir, shown = settings.var_dir / "demo", Console()
    jobs = run_demo(settings, shown, bundled)
    loop = run_model_loop_demo(settings, shown, out_dir, bundled)
    problems = jobs.problems() + loop.problems()
    summary = {"jobs": asdict(jobs), "model_loop": asdict(loop), "problems": problems}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    for problem in problems:
        shown.print(f"[red]demo failed:[/red] {problem}")
    if problems:
        raise typer.Exit(1)
    shown.print(f"[green]demo passed[/green] (summary: {out_dir / 'summary.json'})")


@app.command("bench")
def bench(
    out: Annotated[Path, typer.Option(help="Where the JSON document goes.")] = Path(
        "var/bench.json"
    ),
    only: Annotated[list[str] | None, typer.Option(help="Run only these sections.")] = None,
) -> None:
    """Measure and write the figures (``make bench``); needs the local stack up."""
    from labelloop_tools.bench import run_benchmarks

    run_benchmarks(get_settings(), out, console, only)
    console.print(f"wrote {out}")


def main() -> None:
    configure_logging()
    app()
