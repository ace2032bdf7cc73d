"""Django's PostgreSQL backend, with a health check that costs no round trip while the connection is fine.

``CONN_HEALTH_CHECKS`` makes Django check a reused connection before the first query of each request, so
that a request after a PostgreSQL restart opens a new connection instead of failing on the old one. Django
checks with ``SELECT 1``: a round trip per request, on the accept path as much as in PostgreSQL. Between
queries, though, a server sends an idle client nothing unless it is going away (a restart's or an
administrator's ``FATAL`` error, then the end of the stream), so a socket with nothing to read needs no
query; one with something to read is checked with ``SELECT 1`` as before.
"""

from __future__ import annotations

from django.db.backends.postgresql import base
from psycopg import pq

from orchestrator.sockets import readable


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        conn = self.connection
        if conn is None or conn.closed:
            return False
        try:
            idle = conn.pgconn.status == pq.ConnStatus.OK and not readable(conn.pgconn.socket)
        except Exception:  # a connection that cannot even say this is not usable
            return False
        return idle or super().is_usable()
