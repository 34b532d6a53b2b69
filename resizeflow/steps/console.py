"""A guest's console log, as a host reads it for ``os-getConsoleOutput``."""

from __future__ import annotations

from resizeflow.virt.base import VirtDriver


def console_output(virt: VirtDriver, instance_uuid: str, length: int | None) -> str:
    """The guest's console log on this host, its last ``length`` lines if given.

    As Nova's compute returns it: bytes past ASCII become U+FFFD, a length
    of 0 is nothing, and a negative one counts lines from the start (Nova's
    -1, meant as "everything", drops the first line, and does here too).
    """
    output = virt.console_output(instance_uuid)
    if length is not None:
        output = b"" if length == 0 else b"\n".join(output.split(b"\n")[-length:])
    return output.decode("ascii", "replace")
