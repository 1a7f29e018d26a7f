"""Throughput and memory benchmark of the guard's pass-through, run by ``make bench``.

Synthetic CT studies (512x512, 16-bit, about 512 KiB an instance) are sent by DCMTK
``storescu`` to a real Orthanc archive twice: directly, and through a ``guard serve``
process. Every DCMTK and Orthanc process runs with ``TCP_NODELAY=1``. The figures are
reported, never asserted: see ``python -m bench --help``.

Modules: ``procfs`` reads memory and CPU figures from ``/proc``; ``runs`` performs one timed
run of either path; ``report`` prints the table and writes the JSON results; ``__main__``
parses the options and drives the runs; ``stacks`` summarises a py-spy profile taken with
``--profile DIR``.
"""
