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
    *(
        Known(
            "instance actions",
            r"GET /servers/\{f\}/os-instance-actions/\{req_f_revertResize\} @.*",
            path,
            nova,
            resizeflow,
            "Reverting a move of a stopped server, Nova's finish_revert_resize leaves it "
            "powered off by calling its own stop_instance, which records a "
            "compute_stop_instance event in the revertResize action. resizeflow's finish_revert "
            "step does not power the guest on, and records no such event; recording it is the "
            "step's to do (resizeflow/steps), which this branch does not change.",
        )
        for path, nova, resizeflow in (
            (r"instanceAction\.events", "3 items", "2 items"),
            (
                r"instanceAction\.events\.0\.event",
                '"compute_stop_instance"',
                '"compute_finish_revert_resize"',
            ),
            (
                r"instanceAction\.events\.1\.event",
                '"compute_finish_revert_resize"',
                '"compute_revert_resize"',
            ),
        )
    ),
]
