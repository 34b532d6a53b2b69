"""The differences from Nova the tier expects, each with its reason.

Each entry is as narrow as it can be: the scenario, the request, the JSON
path and both values, as regular expressions matched in full. The report
lists every one with how often it occurred, and the tier fails when one no
longer occurs, so this list only ever shrinks with the code it describes.
"""

from __future__ import annotations

from tests.conformance.engine import Known

_RESIZE_ACTIONS = r".*/os-instance-actions/\{req_(a0|a1|b0|b1)\} @.*"
_NOVA_EVENTS = (
    r'"(conductor_migrate_server|compute_(prep_resize|resize_instance|finish_resize'
    r'|confirm_resize|revert_resize|finish_revert_resize))"'
)
_STEP_EVENTS = (
    r'"compute_(prep_resize|resize_instance|finish_resize|teardown_source_network'
    r"|confirm_migration|drop_source_claim|finish_confirm|teardown_dest_network"
    r'|destroy_dest_domain|terminate_volume_connections|drop_dest_claim|finish_revert)"'
)

KNOWN = [
    Known(
        "instance actions",
        _RESIZE_ACTIONS,
        r"instanceAction\.events",
        r"\d+ items",
        r"\d+ items",
        "resizeflow records one event per workflow step (DESIGN.md section 1): a confirm "
        "shows its 4 steps where Nova shows compute_confirm_resize, a revert its 5 steps where "
        "Nova shows compute_revert_resize and compute_finish_revert_resize, and a resize its 3 "
        "steps where Nova also shows conductor_migrate_server. The events are written by the "
        "steps (flows.py), which this tier does not change.",
    ),
    Known(
        "instance actions",
        _RESIZE_ACTIONS,
        r"instanceAction\.events\.\d+\.event",
        _NOVA_EVENTS,
        _STEP_EVENTS,
        "The same per-step events, compared position by position.",
    ),
    Known(
        "instance actions",
        r".*/os-instance-actions/\{req_d0\} @.*",
        r"instanceAction\.events",
        "1 items",
        "0 items",
        "Nova records an api_lock event on a lock action; resizeflow's service layer "
        "(compute/api.py, not changed here) records the action without an event.",
    ),
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
    Known(
        "delete",
        r"GET /servers/\{c\}/os-instance-actions @2\.21 as .*",
        r"instanceActions(\.\d+\.action)?",
        r'4 items|"confirmResize"|"resize"|"create"',
        r'3 items|"resize"|"create"',
        "Deleting a server that awaits confirmation: Nova records a confirmResize action "
        "before the delete; resizeflow's service layer (compute/api.py) confirms without "
        "recording one.",
    ),
]
