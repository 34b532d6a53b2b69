"""The differences from Nova the tier expects, each with its reason.

Each entry is as narrow as it can be: the scenario, the request, the JSON
path and both values, as regular expressions matched in full. The report
lists every one with how often it occurred, and the tier fails when one no
longer occurs, so this list only ever shrinks with the code it describes.
"""

from __future__ import annotations

from tests.conformance.engine import Known

KNOWN = [
    Known(
        "hypervisors",
        r".*",
        r"hypervisors?(\.\d+)?\.cpu_info\.(arch|features|model|topology|vendor)",
        r"has it: .*",
        r"has no such key",
        "resizeflow does not collect the host CPU's model, vendor, features and topology; "
        "it shows Nova's answer for a driver that reports none ({}). Collecting them needs the "
        "worker and the virt driver.",
    ),
    Known(
        "refusals",
        r"GET /servers @(2\.200|3\.0) as .*",
        r"computeFault\.message",
        r'"Version .* Minimum is 2\.1 and maximum is 2\.104\."',
        r'"Version .* Minimum is 2\.1 and maximum is 2\.96\."',
        "resizeflow serves microversions up to 2.96, Nova 34 up to 2.104.",
    ),
]
