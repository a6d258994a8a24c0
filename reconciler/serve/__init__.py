"""``reconciler serve``: a read-only JSON API, Server-Sent Events and a web dashboard over the state
database. Imported only by the ``serve`` command (and tests): plan/apply never load a web stack."""
