"""``captionkit serve``: an HTTP API and a web page on one loaded model (floor 7, a face).

Layout: :mod:`.config` (what the server may do), :mod:`.service` (the model behind the
engine's micro-batcher: admission, submit window, per-request options), :mod:`.routes`
(``/v1`` handlers), :mod:`.root_routes` (``/v1/files``, with ``--root``), :mod:`.app`
(token, size cap, errors as one line of JSON), :mod:`.files` (``--root``: sidecars, the path
guard), :mod:`.urlguard` (fetching URLs without reaching the server's own network),
:mod:`.metrics`, and ``static/`` (the page: plain HTML/CSS/JS, no build step).

FastAPI and uvicorn come with the ``serve`` extra; nothing here is imported by ``--help``.
"""
