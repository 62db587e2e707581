"""The systemd unit sets what deploy/systemd/README.md says it sets, and a file-descriptor limit that the
status server's connection cap fits in (issue 10, case 9)."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from controller.standalone.server import MAX_CONNECTIONS

SYSTEMD = Path(__file__).resolve().parents[2] / "deploy" / "systemd"


def service_section() -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string((SYSTEMD / "localmodel.service").read_text())
    return dict(parser["Service"])


def test_the_unit_limits_file_descriptors_well_above_the_connection_cap() -> None:
    limit = int(service_section()["LimitNOFILE"])
    assert limit >= 4 * MAX_CONNECTIONS


def test_every_hardening_option_the_readme_names_is_set_in_the_unit() -> None:
    readme = (SYSTEMD / "README.md").read_text()
    hardening = readme.split("## Hardening", 1)[1].split("Options built on mount", 1)[0]
    named = set(re.findall(r"`([A-Z][A-Za-z]+)(?:=[^`]*)?`", hardening))
    named |= {"SystemCallFilter"} if "system call filter" in hardening else set()
    service = service_section()
    assert named, "the README's Hardening section names no option"
    assert named <= set(service), f"named in the README but not set in the unit: {sorted(named - set(service))}"
    assert service["SystemCallFilter"] == "@system-service"
