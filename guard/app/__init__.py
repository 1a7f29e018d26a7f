"""The composition root: one running guard (the ledger, the spool, the DICOM listener, the workers, the admin API).

``service.GuardService`` starts and stops a whole node. With ``node.listener_process`` the
listener runs in a child process (``listener_process``, ``listener_child``); that child imports
only what receiving needs, which is why this package imports nothing itself (the admin API,
forwarding and confirmation loops stay out of the listener's memory).
"""
