"""``mig broker up | down | status | classpath``: the embedded single-node Kafka."""

from __future__ import annotations

import json
import time

import typer

app = typer.Typer(no_args_is_help=True, help="Run the embedded single-node Kafka broker.")


@app.command()
def up(
    port: int = typer.Option(None, help="Client port (default 9092, or the port it ran on)."),
    controller_port: int = typer.Option(None, help="KRaft controller port (default 9093)."),
    heap: str = typer.Option("512m", help="JVM heap size."),
    timeout: float = typer.Option(90.0, help="Seconds to wait for the broker to answer."),
) -> None:
    """Start the broker (fetching Kafka's jars once) and wait until it answers."""
    from mig.broker import EmbeddedBroker

    started = time.monotonic()
    status = EmbeddedBroker(port=port, controller_port=controller_port, heap=heap).up(timeout)
    typer.echo(f"broker up at {status.bootstrap} (pid {status.pid}, Kafka"
               f" {status.kafka_version}, {time.monotonic() - started:.1f} s)")


@app.command()
def down(purge: bool = typer.Option(False, help="Also delete the broker's data.")) -> None:
    """Stop the broker (idempotent)."""
    from mig.broker import EmbeddedBroker

    was = EmbeddedBroker().down(purge=purge)
    typer.echo("broker stopped" if was else "broker was not running")


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Say whether the broker runs and answers; exit 1 if it does not."""
    from dataclasses import asdict

    from mig.broker import EmbeddedBroker

    st = EmbeddedBroker().status()
    if as_json:
        typer.echo(json.dumps(asdict(st)))
    elif st.answering:
        typer.echo(f"broker live at {st.bootstrap} (pid {st.pid}, Kafka {st.kafka_version},"
                   f" data {st.directory})")
    elif st.running:
        typer.echo(f"broker process {st.pid} runs but does not answer at {st.bootstrap}")
    else:
        typer.echo(f"broker not running (data {st.directory})")
    raise typer.Exit(0 if st.answering else 1)


@app.command()
def classpath() -> None:
    """Print the Java classpath of Kafka's jars (for Kafka's own console tools)."""
    from mig.broker.jars import classpath as cp
    from mig.broker.jars import ensure_jars

    typer.echo(cp(ensure_jars()))
