"""The HTTP API: an ASGI application generated from the command table.

``routes.py`` turns each command's ``http`` routes into a router and reads a request's
parameters; ``auth.py`` checks the API key, its scope and the failed-attempt limit;
``errors.py`` maps each error kind to its HTTP status, once; ``openapi.py`` writes the
OpenAPI 3.1 document and the docs page from the same table; ``app.py`` is the ASGI
callable. The server that runs it (hypercorn's trio worker) is ``net/http_server.py``.
"""
