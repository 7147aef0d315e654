"""`mtm rebuild` and `mtm erase`: an admin's commands to the services."""

from __future__ import annotations

import asyncio
import sys

import rich_click as click

from mtm.cli import output
from mtm.cli.errors import UsageError
from mtm.cli.output import json_option
from mtm.cli.params import PATIENT
from mtm.cli.reviews import build, send
from mtm.contracts.admin import SERVICES, ErasePatient
from mtm.contracts.subjects import ERASE_PATIENT


@click.command("rebuild")
@click.argument("service", required=False, type=click.Choice(SERVICES), help="The service whose tables to rebuild.")
@click.option("--all", "every", is_flag=True, help="Every service, one after the other.")
@json_option
def rebuild(service: str | None, every: bool, as_json: bool) -> int:
    """Rebuild a service's tables from the patient log while the stack runs, then swap them in (admin)."""
    from mtm.cli.rebuild import rebuild_services
    from mtm.cli.stack import nats_client

    if every == (service is not None):
        raise UsageError(f"name one service ({', '.join(SERVICES)}) or --all")
    services = list(SERVICES) if every else [str(service)]
    progress = None if as_json else (sys.stderr if not sys.stdout.isatty() else sys.stdout)
    reports = asyncio.run(rebuild_services(nats_client(), services, progress))
    if as_json:
        for report in reports:
            output.json_line(report.model_dump(mode="json"))
    return 0


@click.command("erase")
@click.argument("patient", type=PATIENT, help="The patient id (p1 or Patient/p1).")
@click.option("--reason", required=True, help="Why, e.g. 'request of the patient' (at most 200 characters).")
@json_option
def erase(patient: str, reason: str, as_json: bool) -> int:
    """Forget a patient everywhere: their key is destroyed, every service deletes their rows (admin)."""
    return output.show_reply(send(ERASE_PATIENT, build(ErasePatient, patient_id=patient, reason=reason)), as_json)


COMMANDS = (rebuild, erase)
