"""The web console: routes, access checks and rendering (Jinja2, autoescaped).

Routes, below ``http.base_path``::

    GET  /                      the job list
    GET  /job/NAME              a job: spec, chart, history, controls
    POST /job/NAME/run          run now (a run request a running daemon claims)
    POST /job/NAME/pause        pause, with an optional ``reason``
    POST /job/NAME/resume       resume
    GET  /run/ID                a run and its output
    GET  /run/ID/output?after=N the output lines after N, as JSON (the run page polls it)
    GET  /login, POST /login    the token form; POST /logout
    GET  /static/FILE           the stylesheet and the script (no data, no login needed)

What must hold: no page or JSON is served without the API token (Bearer header or a session);
with no token configured every route but ``/static`` answers that the console is disabled;
state changes are POST only, with the session's CSRF token and a same-origin check (a Bearer
request carries no cookie and needs neither); every value reaches HTML through Jinja's
autoescape; every data response is ``Cache-Control: no-store``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from scheduler.web import auth, views
from scheduler.web.wire import Request, Response

HERE = Path(__file__).resolve().parent
STATIC = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}
CLAIM_WAIT = 10.0  # seconds a run-now waits for a daemon to claim the request
RUN_WAIT = 3.0  # then for the claimed run's record, to open its page
REASON_MAX = 500
NOTES = {
    "paused": "Paused.", "resumed": "Resumed; slots missed while paused follow the job's catchup.",
    "already-paused": "The job was already paused.", "not-paused": "The job was not paused.",
    "requested": "Run requested and claimed by a scheduler; its run appears below in a moment.",
    "logged-out": "Logged out.",
}


_LOCAL_PATH = re.compile(r"/(?!/)[A-Za-z0-9._~%/?&=+-]*")  # a path on this site: no scheme, host, CR/LF or tab


def local_target(target: str) -> str:
    """Where login sends the browser: ``target`` when it is a plain path on this site, else ``/``
    (no open redirect, nothing a browser would read as another host, nothing that breaks the header)."""
    return target if _LOCAL_PATH.fullmatch(target) else "/"


def is_id(text: str) -> bool:
    """A run id or output offset as the store takes it: ASCII digits, at most 18 of them."""
    return text.isascii() and text.isdigit() and len(text) <= 18


@dataclass
class Caller:
    """Who is asking: through a session (has a CSRF token) or a Bearer header (a script)."""

    via: str  # "session" or "bearer"
    session: auth.Session | None = None
    session_id: str = ""

    @property
    def csrf(self) -> str:
        return self.session.csrf if self.session is not None else ""


class WebApp:
    """The console over one :class:`~scheduler.web.views.Backend`; ``handle`` is thread-safe."""

    def __init__(self, backend: views.Backend, base_path: str = "") -> None:
        import jinja2

        self.backend = backend
        self.base = base_path.rstrip("/")
        self.sessions = auth.Sessions()
        self.throttle = auth.LoginThrottle()
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                      undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.globals.update(url=self.url, base=self.base)

    # --- helpers ---------------------------------------------------------------------------
    def url(self, *parts: object, **query: object) -> str:
        """An absolute path below the base path, each part quoted (job names, ids)."""
        path = self.base + "/" + "/".join(quote(str(p), safe="") for p in parts)
        given = {k: v for k, v in query.items() if v is not None}
        if given:
            from urllib.parse import urlencode

            path += "?" + urlencode(given)
        return path

    def token(self) -> str | None:
        return self.backend.config().http.api_token or None

    def render(self, template: str, status: int = 200, caller: Caller | None = None, **context: Any) -> Response:
        context.setdefault("note", "")
        context.setdefault("throttled", False)
        body = self.env.get_template(template).render(
            csrf=caller.csrf if caller else "", logged_in=caller is not None and caller.via == "session",
            served_by=self.backend.served_by, **context)
        return Response(status, body.encode(), headers={"Cache-Control": "no-store"})

    def error(self, status: int, message: str, caller: Caller | None = None) -> Response:
        return self.render("error.html", status, caller, code=status, message=message)

    def json(self, status: int, payload: Any) -> Response:
        return Response(status, (json.dumps(payload) + "\n").encode(), "application/json",
                        {"Cache-Control": "no-store"})

    # --- access ----------------------------------------------------------------------------
    def caller(self, request: Request) -> Caller | None:
        token = self.token()
        given = auth.bearer(request)
        if given:
            if auth.token_matches(given, token):
                return Caller("bearer")
            self.throttle.failed(request.client)  # Bearer guesses count like login guesses
            return None
        session_id = request.cookie(auth.COOKIE) or ""
        session = self.sessions.get(session_id, token)
        return Caller("session", session, session_id) if session is not None else None

    def post_allowed(self, request: Request, caller: Caller) -> bool:
        if caller.via == "bearer":
            return True
        assert caller.session is not None
        return auth.same_origin(request) and auth.csrf_ok(request, caller.session)

    # --- dispatch --------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        parts = [unquote(p) for p in request.path.split("/") if p]  # job names may hold any character
        if parts[:1] == ["static"]:
            return self.static(parts[1] if len(parts) == 2 else "")
        if self.token() is None:
            return self.render("disabled.html", 403)
        if parts == ["login"]:
            return self.login(request)
        if auth.bearer(request) and self.throttle.blocked(request.client):
            return self.json(429, {"error": "too many wrong tokens from this address; try again in a minute"})
        caller = self.caller(request)
        if caller is None:
            if request.method == "GET" and parts[-1:] != ["output"]:
                return Response.redirect(self.url("login", next=request.path if request.path != "/" else None))
            return self.json(401, {"error": "unauthorized: log in or send Authorization: Bearer TOKEN"})
        if request.method == "POST":
            if not self.post_allowed(request, caller):
                return self.error(403, "Request refused: it did not come from this console's own form "
                                       "(missing or wrong CSRF token, or another origin). Reload the page and retry.",
                                  caller)
            return self.post(request, caller, parts)
        if request.method not in ("GET", "HEAD"):
            return self.error(405, "Method not allowed.", caller)
        return self.get(request, caller, parts)

    def get(self, request: Request, caller: Caller, parts: list[str]) -> Response:
        backend = self.backend
        if not parts:
            return self.render("jobs.html", caller=caller, jobs=views.job_rows(backend), note=self.note(request))
        if len(parts) == 2 and parts[0] == "job":
            if parts[1] not in backend.config().jobs:
                return self.error(404, f"No job named {parts[1]!r} in the config.", caller)
            return self.render("job.html", caller=caller, page=views.job_page(backend, parts[1]),
                               note=self.note(request), reason_max=REASON_MAX)
        if len(parts) in (2, 3) and parts[0] == "run" and is_id(parts[1]):
            record = backend.store.get_run(int(parts[1]))
            if len(parts) == 3 and parts[2] == "output":
                if record is None:
                    return self.json(404, {"error": "no such run"})
                after = request.arg("after", "0")
                return self.json(200, views.output_json(backend, record, int(after) if is_id(after) else 0))
            if record is None:
                return self.error(404, f"No run with id {parts[1]}.", caller)
            if len(parts) == 2:
                return self.render("run.html", caller=caller, page=views.run_page(backend, record))
        return self.error(404, "Not found.", caller)

    def post(self, request: Request, caller: Caller, parts: list[str]) -> Response:
        if parts == ["logout"]:
            self.sessions.close(caller.session_id)
            return Response.redirect(self.url("login", note="logged-out"),
                                     [auth.session_cookie("", self.base, request.secure, max_age=0)])
        if len(parts) != 3 or parts[0] != "job" or parts[2] not in ("run", "pause", "resume"):
            return self.error(404, "Not found.", caller)
        job, action = parts[1], parts[2]
        if job not in self.backend.config().jobs:
            return self.error(404, f"No job named {job!r} in the config.", caller)
        store = self.backend.store
        by = f"web {request.client}".strip()
        if action == "pause":
            reason = request.field("reason").strip()[:REASON_MAX] or None
            note = "paused" if store.set_paused(job, True, reason, by) else "already-paused"
        elif action == "resume":
            note = "resumed" if store.set_paused(job, False, None, by) else "not-paused"
        else:
            return self.run_now(job, caller)
        return Response.redirect(self.url("job", job, note=note))

    def run_now(self, job: str, caller: Caller) -> Response:
        """Queue a run request (like ``scheduler trigger``) and wait for a daemon to claim it; then
        open the run's page.  A request nobody claims in time is withdrawn and said so."""
        store = self.backend.store
        request_id = store.request_trigger(job, None, "request")
        deadline = time.monotonic() + CLAIM_WAIT
        while True:
            claimed = store.get_trigger(request_id)
            if claimed is None:  # withdrawn by someone else (``scheduler trigger`` cancel, a cleanup)
                return self.error(409, "The run request was withdrawn before a scheduler claimed it.", caller)
            if claimed.claimed_by is not None:
                break
            if time.monotonic() >= deadline and store.cancel_trigger(request_id):
                return self.error(503, f"No running scheduler claimed the run request within {CLAIM_WAIT:g}s "
                                       "(is 'scheduler run' running on this state store?); it was withdrawn.", caller)
            time.sleep(0.1)
        deadline = time.monotonic() + RUN_WAIT
        while claimed.slot is not None and time.monotonic() < deadline:
            record = store.find_run(job, claimed.slot)
            if record is not None and record.started_at is not None and record.started_at >= claimed.requested_at:
                return Response.redirect(self.url("run", record.id))
            time.sleep(0.1)
        return Response.redirect(self.url("job", job, note="requested"))

    def login(self, request: Request) -> Response:
        target = local_target(request.field("next") or request.arg("next"))
        if request.method != "POST":
            return self.render("login.html", next=target, note=self.note(request), failed=False)

        token = self.token()
        if not auth.same_origin(request):
            return self.error(403, "Login refused: the form was posted from another origin.")
        if self.throttle.blocked(request.client):
            return self.render("login.html", 429, next=target, note="", failed=False, throttled=True)
        if not auth.token_matches(request.field("token"), token):
            self.throttle.failed(request.client)
            return self.render("login.html", 401, next=target, note="", failed=True)
        assert token is not None
        session_id, _ = self.sessions.open(token)
        return Response.redirect(self.base + target if target != "/" else self.url(),
                                 [auth.session_cookie(session_id, self.base, request.secure)])

    def note(self, request: Request) -> str:
        return NOTES.get(request.arg("note"), "")

    def static(self, name: str) -> Response:
        if name not in STATIC:
            return Response(404, b"not found\n", "text/plain; charset=utf-8")
        return Response(200, (HERE / "static" / name).read_bytes(), STATIC[name], {"Cache-Control": "max-age=3600"})
