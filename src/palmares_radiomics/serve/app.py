"""The upload page and its HTTP API (Flask); thin: the work is in study, verdict, store and auth.

Routes (DESIGN.md, ``palmares serve``):

- ``GET /``: the page (site, patient, modality, file; verdict, previews and history at once);
- ``GET /api/patients``: ``[{site, patient_id, modality, status, version}]`` of the study's selected
  patients that the caller's token may see (status none / accepted / refused);
- ``POST /api/segmentations`` (multipart ``site``, ``patient_id``, ``modality``, ``file``): JSON
  ``{accepted, version, problems, lesions, preview}`` with 200 / 422 / 413 / 415 / 404 / 400;
- ``GET /api/history``: the attempts for one patient and modality; ``GET /api/previews/<id>/<name>.png``;
- ``GET``/``POST /login``: the token form for browsers (the token then travels in an HttpOnly,
  SameSite=Strict cookie); API clients send ``Authorization: Bearer <token>``.

With a token file every request but the login form needs a token, and a token sees only its site:
another site's patient answers 404 exactly like an unknown one. Nothing else of ``work/phi`` is served.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
import secrets
import shutil
import tempfile
import traceback
import uuid
from pathlib import Path
from typing import Any

from flask import Flask, Request, abort, g, jsonify, make_response, redirect, render_template, request, send_file
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..errors import PalmaresError
from ..files import sha256_file, write_json
from .auth import ALL_SITES, Tokens, allows
from ..volumes import sniff_format
from .store import UploadStore
from .study import Study
from .verdict import judge, render_previews

log = logging.getLogger("palmares.serve")

COOKIE = "palmares_token"
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
_PREVIEW_NAME = re.compile(r"^(preview|lesion_\d{1,5})\.png$")
FIELDS = ("site", "patient_id", "modality", "file")


def _answer(status: int, *, accepted: bool = False, version: int | None = None, problems: list | None = None,
            lesions: list | None = None, preview: str | None = None, **extra: Any):
    body = {"accepted": accepted, "version": version, "problems": problems or [], "lesions": lesions or [],
            "preview": preview, **extra}
    return make_response(jsonify(body), status)


def _refusal(status: int, code: str, message: str, fix: str):
    return _answer(status, problems=[{"code": code, "message": message, "fix": fix}])


#: How long the preview route waits for previews still being drawn (10 lesions of a 512×512×300 CT: about 2 s).
PREVIEW_WAIT_S = 30
#: Host names a server without tokens answers to (it listens on loopback only; any other name is a rebinding page).
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _warm(study: Study, entry, warming: set, lock: threading.Lock) -> None:
    """Read a patient's baseline scan into the study's cache (errors surface at upload, with their answer)."""
    try:
        study.baseline(entry)
    except Exception:  # noqa: BLE001 - the upload reports it; nothing to do here
        log.debug("baseline of %s %s not read ahead", entry.patient, entry.modality)
    finally:
        with lock:
            warming.discard(entry)


def _clear_scratch(scratch: Path, older_than_s: float = 600) -> None:
    """Remove what uploads interrupted by a crash left in the scratch folder (uploads take seconds, not minutes)."""
    if not scratch.is_dir():
        return
    limit = time.time() - older_than_s
    for leftover in scratch.iterdir():
        try:
            if leftover.lstat().st_mtime < limit:
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        except OSError:
            log.warning("could not remove an interrupted upload from the scratch folder")


def _draw(study: Study, entry, judgement, folder: Path, upload_id: str, drawing: dict, lock: threading.Lock) -> None:
    """Draw an accepted upload's previews, then forget the pending job (the files answer from then on)."""
    try:
        render_previews(study, entry, judgement, folder)
    except Exception:
        log.error("previews of upload %s (%s %s) failed:\n%s", upload_id, entry.patient, entry.modality,
                  traceback.format_exc())
        raise
    finally:
        with lock:
            drawing.pop(upload_id, None)


def create_app(study: Study, tokens: Tokens | None = None) -> Flask:
    """The Flask application serving ``study``; with ``tokens`` every request needs a token of its site."""
    app = Flask(__name__, static_folder=None)  # no static route: the page is self-contained
    app.config["MAX_CONTENT_LENGTH"] = study.max_upload_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = 64 * 1024  # text fields are short
    store = UploadStore(study.segmentations, study.uploads / "locks")
    scratch = study.uploads / "tmp"
    previews_root = study.uploads / "previews"
    # previews are drawn after the verdict is answered; the image route waits for them (PREVIEW_WAIT_S at most).
    # The same pool reads a patient's baseline scan when the page shows the patient, before the file arrives.
    background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="palmares-serve")
    drawing: dict[str, Future] = {}
    warming: set = set()
    drawing_lock = threading.Lock()
    _clear_scratch(scratch)

    class UploadRequest(Request):
        """Multipart file parts are spooled in the study's PHI work area, never in the system's /tmp."""

        def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
            scratch.mkdir(parents=True, exist_ok=True)
            return tempfile.TemporaryFile(dir=scratch)

    app.request_class = UploadRequest

    # --- authentication ------------------------------------------------------------------------------

    def scope() -> str | None:
        """The site the request's token opens (``*`` for all); None without a token file."""
        return g.get("scope")

    @app.before_request
    def authenticate():
        g.nonce = secrets.token_urlsafe(16)
        if tokens is None and request.host.rsplit(":", 1)[0].strip("[]") not in LOOPBACK_HOSTS:
            abort(403)  # a page on another name reaching a loopback server: DNS rebinding
        origin = request.headers.get("Origin")
        if request.method == "POST" and origin and origin.split("://", 1)[-1] != request.host:
            abort(403)  # a form or script of another site posting here (cross-site request forgery)
        if tokens is None or request.endpoint == "login":
            return None
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.startswith("Bearer ") else request.cookies.get(COOKIE)
        site = tokens.site_of(token)
        if site is None:
            if request.path.startswith("/api/"):
                return _refusal(401, "token", "This request has no valid token.",
                                "Send 'Authorization: Bearer <token>' with the token the study team gave you.")
            return redirect("/login")
        if request.method == "POST" and not header.startswith("Bearer ") and \
                request.headers.get("X-Requested-With") != "palmares":
            abort(403)  # a cookie alone never authorises a POST: only the page's own script sends this header
        g.scope = site
        return None

    @app.after_request
    def headers(response):
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"  # "no-referrer" makes a form POST send "Origin: null"
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'nonce-{g.get('nonce', '')}'; style-src 'unsafe-inline'; "
            "img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
        return response

    @app.route("/login", methods=["GET", "POST"])
    def login():
        if tokens is None:
            return redirect("/")
        if request.method == "GET":
            return render_template("login.html", failed=False, nonce=g.nonce)
        token = request.form.get("token", "").strip()
        if tokens.site_of(token) is None:  # tokens carry >= 120 bits: guessing is hopeless, no delay needed
            return render_template("login.html", failed=True, nonce=g.nonce), 401
        response = redirect("/")
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=request.is_secure)
        return response

    @app.route("/logout", methods=["POST"])
    def logout():
        response = redirect("/login")
        response.delete_cookie(COOKIE)
        return response

    # --- the page ------------------------------------------------------------------------------------

    @app.get("/")
    def page():
        visible = sorted({e.site for e in study.entries() if allows(scope(), e.site)})
        return render_template("upload.html", sites=visible, ready=study.ready(), nonce=g.nonce,
                               modalities=[(m, m.upper()) for m in study.modalities],
                               max_mb=study.max_upload_bytes // (1024 * 1024), tokens=tokens is not None,
                               coordinating=scope() == ALL_SITES)

    # --- the API -------------------------------------------------------------------------------------

    def status_of(site: str, patient_id: str, modality: str) -> tuple[str, int | None]:
        history = store.history(site, patient_id, modality)
        if not history:
            return "none", None
        version = next((h.get("version") for h in reversed(history) if h.get("accepted")), None)
        return ("accepted" if history[-1].get("accepted") else "refused"), version

    @app.get("/api/patients")
    def patients():
        rows = []
        for e in study.entries():
            if allows(scope(), e.site):
                status, version = status_of(e.site, e.patient_id, e.modality)
                rows.append({"site": e.site, "patient_id": e.patient_id, "modality": e.modality, "status": status,
                             "version": version})
        return jsonify(rows)

    def visible_entry(site: str, patient_id: str, modality: str):
        entry = study.find(site, patient_id, modality)
        return entry if entry is not None and allows(scope(), entry.site) else None

    @app.get("/api/history")
    def history():
        args = request.args
        entry = visible_entry(args.get("site", ""), args.get("patient_id", ""), args.get("modality", ""))
        if entry is None:
            return _refusal(404, "unknown_patient", "No such patient and modality in this study.",
                            "Choose the site, patient and modality from the lists.")
        items = []
        with drawing_lock:  # the radiologist picked the patient: read the scan now (once at a time per patient)
            if entry not in warming:
                warming.add(entry)
                background.submit(_warm, study, entry, warming, drawing_lock)
        for h in reversed(store.history(entry.site, entry.patient_id, entry.modality)):
            upload_id = h.get("upload_id", "")
            items.append({**{k: h.get(k) for k in ("version", "accepted", "uploaded_at", "kind", "problems",
                                                    "warnings", "lesions", "ignored")},
                          "preview": f"/api/previews/{upload_id}/preview.png" if "preview.png" in h.get("previews", [])
                          else None})
        return jsonify(items)

    @app.get("/api/previews/<upload_id>/<name>")
    def preview(upload_id: str, name: str):
        if not _UPLOAD_ID.match(upload_id) or not _PREVIEW_NAME.match(name):
            abort(404)
        folder = previews_root / upload_id
        try:
            site = (folder / "site.txt").read_text(encoding="utf-8").strip()
        except OSError:
            abort(404)
        if not allows(scope(), site):
            abort(404)
        with drawing_lock:
            pending = drawing.get(upload_id)
        if pending is not None:
            try:
                pending.result(timeout=PREVIEW_WAIT_S)
            except Exception:  # noqa: BLE001 - logged by the drawing job; the image is then absent
                abort(404)
        if not (folder / name).is_file():
            abort(404)
        return send_file(folder / name, mimetype="image/png", max_age=0)

    @app.post("/api/segmentations")
    def upload():
        missing = [f for f in FIELDS if not (request.files.get(f) if f == "file" else request.form.get(f, "").strip())]
        if missing:
            return _refusal(400, "missing_field", f"The upload lacks: {', '.join(missing)}.",
                            "Choose the site, patient, modality and a file, then upload again.")
        site, patient_id = request.form["site"].strip(), request.form["patient_id"].strip()
        modality = request.form["modality"].strip().lower()
        entry = visible_entry(site, patient_id, modality)
        if entry is None:
            return _refusal(404, "unknown_patient", "No such patient and modality in this study.",
                            "Choose the site, patient and modality from the lists; a patient appears once the study "
                            "command has selected their baseline scan.")
        upload_id = uuid.uuid4().hex
        scratch.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{upload_id}-", dir=scratch))
        try:
            raw = work / "upload"
            request.files["file"].save(raw)  # the client's file name is never used
            fmt = sniff_format(raw)
            if fmt is None:
                return _refusal(415, "unsupported_type", "This file is not a NIfTI or NRRD label map, nor a DICOM "
                                "file (its content was checked, not its name).",
                                "Export the segmentation from 3D Slicer, ITK-SNAP, OHIF or the RT system as NIfTI "
                                "(.nii.gz), DICOM-SEG or RTSTRUCT, and upload that file.")
            named = raw.rename(work / f"upload.{fmt}")
            judgement = judge(study, entry, named)
            record = judgement.history_entry(upload_id, sha256_file(named), named.stat().st_size)
            urls = {name: f"/api/previews/{upload_id}/{name}" for name in judgement.preview_names}
            lesions = [{**row, "preview": urls.get(f"lesion_{row['label']}.png")} for row in judgement.lesions]
            if not judgement.accepted:
                store.record_refusal(entry.site, entry.patient_id, entry.modality, record)
                return _answer(422, problems=judgement.problems, lesions=lesions, warnings=judgement.warnings,
                               ignored=judgement.ignored)
            commit = store.commit(entry.site, entry.patient_id, entry.modality, named, fmt, record)
            folder = previews_root / upload_id
            folder.mkdir(parents=True)
            (folder / "site.txt").write_text(entry.site, encoding="utf-8")
            write_json(folder / "version.json", {"version": commit.version})
            if judgement.preview_names:
                with drawing_lock:
                    drawing[upload_id] = background.submit(_draw, study, entry, judgement, folder, upload_id,
                                                           drawing, drawing_lock)
            return _answer(200, accepted=True, version=commit.version, lesions=lesions,
                           preview=urls.get("preview.png"), warnings=judgement.warnings, ignored=judgement.ignored)
        except PalmaresError as exc:  # the baseline image cannot be read: the study team's problem, not the file's
            log.error("upload for %s %s could not be judged: %s", entry.patient, modality, exc)
            return _refusal(503, "image_unavailable", f"This patient's baseline {modality.upper()} cannot "
                            "be read on the server (the reason is in the server's log).",
                            "Tell the study team; nothing was stored.")
        except OSError:
            log.error("upload for %s %s failed:\n%s", entry.patient, modality, traceback.format_exc())
            return _refusal(507, "storage", "The server could not store the file (its disk may be full); nothing "
                            "was changed.", "Tell the study team, then upload again later.")
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_exc):
        mb = study.max_upload_bytes // (1024 * 1024)
        return _refusal(413, "too_large", f"The file is larger than the {mb} MB this study accepts.",
                        "Upload the segmentation alone (not the images), compressed (.nii.gz); ask the study team "
                        "if a segmentation really is larger.")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if request.path.startswith("/api/"):
            return _refusal(exc.code or 500, "http", exc.name, "Use the page, or see DESIGN.md for the API.")
        return exc

    @app.errorhandler(Exception)
    def server_error(exc: Exception):
        log.error("request failed:\n%s", traceback.format_exc())
        return _refusal(500, "server_error", "The server could not check this file (an internal error, logged on "
                        "the server).", "Tell the study team; nothing was stored.")

    return app
