"""Query/retrieve: the guard as a C-FIND/C-MOVE node between sources and the archive, and ``guard pull``.

- ``common``: the information models, reading a request, status data sets;
- ``find``: C-FIND relay (archive answers streamed back; optionally the ledger's when the archive is down);
- ``move``: C-MOVE relay (the archive moves to the guard, which relays each instance to the destination);
- ``pull``: C-MOVE from a source to the guard, so studies are ingested, forwarded and confirmed;
- ``relay``: the entry the listener's handlers call.
"""
