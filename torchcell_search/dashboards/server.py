"""``torchcell-search dashboard``: optuna-dashboard with the study's figures."""

from __future__ import annotations

import socketserver
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna_dashboard

from torchcell_search.dashboards._study import open_study, study_artifact_store
from torchcell_search.dashboards.integration import refresh_dashboard
from torchcell_search.errors import ConfigError
from torchcell_search.storage.urls import redact

__all__ = ["dashboard_command"]


class _QuietHandler(WSGIRequestHandler):
    """No access log: the dashboard polls every few seconds and would flood the terminal."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base class name
        pass


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    # The page fetches the study, its trials and artifacts in parallel.
    daemon_threads = True


def dashboard_command(study: str, storage: str | None, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Refresh the study's figures and serve optuna-dashboard until interrupted.

    The server binds ``host`` (localhost unless told otherwise) and prints the study's page
    URL; the storage URL is printed with its password redacted. ``port=0`` picks a free port.

    Example::

        torchcell-search dashboard --study demo --storage sqlite:///torchcell-search.db

    Raises:
        ConfigError: the storage URL is invalid, or ``host``/``port`` cannot be bound.
        StorageError: the storage cannot be opened.
        StudyError: the study does not exist.
    """
    loaded, url = open_study(study, storage)
    store = study_artifact_store(loaded, url)
    refresh_dashboard(loaded, artifact_store=store)
    app = optuna_dashboard.wsgi(loaded._storage, artifact_store=store)
    try:
        server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    except OSError as e:
        raise ConfigError(f"dashboard: cannot listen on {host}:{port} ({e.strerror or e}); "
                          f"pass another --port or --host") from e
    bound_port = server.server_address[1]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"Study {study!r} in {redact(url)}", flush=True)
    print(f"Dashboard: http://{shown_host}:{bound_port}/dashboard/studies/{loaded._study_id}", flush=True)
    print("Press Ctrl-C to stop.", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
