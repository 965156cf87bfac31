"""The FastAPI application: routes, error answers, limits, CORS and the web page.

Every expected failure is a 4xx whose body is ``{"detail": "one line"}``; anything else is a bug,
answered 500 with one line and logged with its traceback. Cross-origin requests are refused unless
origins are configured.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

import asif_vdb.serve.routes_anchors as routes_anchors
import asif_vdb.serve.routes_query as routes_query
import asif_vdb.serve.routes_store as routes_store
from asif_vdb import __version__
from asif_vdb.errors import (
    AsifError,
    EncoderMismatchError,
    InputError,
    NotFoundError,
    ReadOnlyStoreError,
    StoreBusyError,
    StoreError,
)
from asif_vdb.serve.service import Service

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger("asif_vdb.serve")

#: HTTP status of each kind of error, most specific first.
STATUS: list[tuple[type[AsifError], int]] = [
    (NotFoundError, 404), (ReadOnlyStoreError, 409), (StoreBusyError, 409), (EncoderMismatchError, 409),
    (InputError, 400), (StoreError, 409), (AsifError, 400),
]


def one_line(text: str) -> str:
    return " ".join(str(text).split())[:1000]


def create_app(service: Service) -> FastAPI:
    """The service's application over one open store (the caller opens and closes the store)."""
    app = FastAPI(title="asif-vdb", version=__version__, max_body_size=service.settings.max_body_bytes,
                  description="Zero-shot classification, search and explanations from two frozen encoders and "
                              "image-caption anchor pairs; anchors change live. Requests that change the store "
                              "need the X-API-Key header when the service has a key.")
    app.state.service = service

    @app.exception_handler(AsifError)
    async def asif_error(request: Request, exc: AsifError) -> JSONResponse:
        status = next(code for kind, code in STATUS if isinstance(exc, kind))
        return JSONResponse({"detail": one_line(str(exc)) or type(exc).__name__}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse({"detail": one_line(f"{where}: {first.get('msg', 'invalid request')}")}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path (routing names only its first route's)
            headers["Allow"] = ", ".join(sorted({m for r in request.app.routes if isinstance(r, APIRoute)
                                                 and r.path_regex.match(request.url.path) for m in r.methods or ()}))
        return JSONResponse({"detail": one_line(str(exc.detail))}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": one_line(f"internal error: {type(exc).__name__}: {exc}")}, status_code=500)

    app.include_router(routes_store.router)
    app.include_router(routes_query.router)
    app.include_router(routes_anchors.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    if service.settings.cors:
        app.add_middleware(CORSMiddleware, allow_origins=list(service.settings.cors),
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["X-API-Key", "Content-Type"])
    return app
