"""Programme operations: mining sites, their energy estimates, silent workers and curtailment.

Pure bookkeeping (``sites``, ``schedule``, ``curtail``) fed by a few calls from the Stratum server, and one
I/O-side controller (``controller``) that applies curtailment and records it.
"""
