"""``palmares serve``: the segmentation upload page for radiologists (Flask app served by waitress).

Bound to 127.0.0.1 by default; any other address needs a token file (:mod:`.auth`). See :mod:`.app`
for the routes, :mod:`.verdict` for the judgement, :mod:`.store` for versioned storage.
"""

from __future__ import annotations

import ipaddress
import logging
import tempfile
from pathlib import Path

from ..errors import ConfigError

LOOPBACK_NAMES = {"localhost"}
#: Open connections waitress accepts at once (a centre's radiologists, not the public).
CONNECTION_LIMIT = 32


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: addresses other machines cannot reach."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(config: Path, host: str = "127.0.0.1", port: int = 8765, token_file: Path | None = None,
          threads: int = 4) -> None:
    """Serve the study of ``config`` until interrupted; refuses a non-loopback ``host`` without ``token_file``."""
    import waitress

    from .app import create_app
    from .auth import Tokens
    from .study import Study

    if not is_loopback(host) and token_file is None:
        raise ConfigError(f"serving on {host} lets other machines reach the page: give --token-file (one 'SITE TOKEN' "
                          "line per centre) or serve on 127.0.0.1")
    tokens = Tokens.read(token_file) if token_file else None
    study = Study(config)
    scratch = study.uploads / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(scratch)  # request bodies waitress spools to disk stay in the PHI work area
    app = create_app(study, tokens)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("palmares.serve").info("serving %s on http://%s:%d/ (%s)", Path(config).name, host, port,
                                             "tokens required" if tokens else "no token: this machine only")
    # waitress holds a whole request body before the app sees it: no more than one upload's worth (plus the form),
    # and a bounded number of connections, so that nobody fills the disk before the token is even checked
    waitress.serve(app, host=host, port=port, threads=threads, ident="palmares", connection_limit=CONNECTION_LIMIT,
                   max_request_body_size=study.max_upload_bytes + (64 << 10))
