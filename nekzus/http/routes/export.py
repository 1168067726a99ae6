"""Export to docker-compose: one container, or several as one stack, as JSON or a zip.

Exporting with ``sanitize_secrets: false`` writes secret values in clear, which inspect never
shows, so it needs the ``write:containers`` scope; a sanitised export needs only read access. A
batch export saved as a managed stack (``save_as``) also needs ``write:stacks``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from runtimes import ContainerRef, ExportSource, RuntimeFailure, Unavailable

from ...errors import ApiError, from_runtime, invalid_request, validation_error
from ...export import ComposeExport, build
from ...keys import CONFIG
from ...params import ID_LIST_FIELDS, container_id, container_ids, json_fields, namespace_value
from ...security.auth import PRINCIPAL, READ_CONTAINERS, WRITE_CONTAINERS, WRITE_STACKS, requires
from ...security.ratelimit import rate_pool
from ...stacks.names import is_stack_name, stack_name
from ...stacks.service import STACKS
from .common import runtime_error, runtime_for
from .stacks import save_stack, stack_detail

log = logging.getLogger(__name__)

DEFAULT_STACK = "exported-stack"
_FLAGS = ("sanitize_secrets", "include_volumes", "include_networks")


def _flags(body: dict[str, Any]) -> dict[str, bool]:
    flags = {}
    for name in _FLAGS:
        value = body.get(name, True)
        if not isinstance(value, bool):
            raise invalid_request(f"{name} must be true or false")
        flags[name] = value
    return flags


def _check_secrets_scope(request: web.Request, sanitize: bool) -> None:
    if not sanitize and not request[PRINCIPAL].allows(WRITE_CONTAINERS):
        raise ApiError(403, "FORBIDDEN", f"Exporting secrets in clear needs the scope {WRITE_CONTAINERS!r}")


def _format(request: web.Request, preview: bool) -> str:
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "zip"):
        raise invalid_request("format must be json or zip")
    if preview and fmt == "zip":
        raise invalid_request("A preview is JSON only: use the export endpoint for a zip")
    return fmt


def _respond(export: ComposeExport, fmt: str, stack: str, status: int = 200) -> web.Response:
    if fmt == "zip":
        return web.Response(
            body=export.to_zip(),
            status=status,
            content_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{stack}.zip"'},
        )
    return web.json_response(export.to_json(), status=status)


def _single(preview: bool) -> Any:
    @requires(READ_CONTAINERS)
    @rate_pool("containers")
    async def handler(request: web.Request) -> web.Response:
        cid = container_id(request)
        fmt = _format(request, preview)
        flags = _flags(await json_fields(request, _FLAGS, required=False))
        _check_secrets_scope(request, flags["sanitize_secrets"])
        runtime = runtime_for(request)
        try:
            source = await runtime.export_source(ContainerRef(cid, namespace_value(request)))
            drafts = runtime.compose_services(
                source, include_volumes=flags["include_volumes"], include_networks=flags["include_networks"]
            )
        except RuntimeFailure as exc:
            raise runtime_error(
                exc, "EXPORT_FAILED", "Failed to export container configuration", cid
            ) from exc
        export = build(drafts, base=source.name, sanitize=flags["sanitize_secrets"])
        return _respond(export, fmt, source.name)

    handler.__name__ = "export_preview" if preview else "export_container"
    return handler


def _save_as(request: web.Request, body: dict[str, Any], fmt: str) -> str | None:
    """The managed stack an export is to be saved as (None: not saved); saving needs the scope
    ``write:stacks`` too, and a JSON answer, which carries the new stack."""
    if "save_as" not in body:
        return None
    name = stack_name(body["save_as"])
    if fmt == "zip":
        raise invalid_request("An export saved as a stack answers JSON: leave out format=zip")
    if not request[PRINCIPAL].allows(WRITE_STACKS):
        raise ApiError(403, "FORBIDDEN", f"Saving an export as a stack needs the scope {WRITE_STACKS!r}")
    return name


def _batch(preview: bool) -> Any:
    # Only an export may be saved as a stack; a preview only shows what would be exported.
    fields = (*ID_LIST_FIELDS, "stack_name", *_FLAGS, *(() if preview else ("save_as",)))

    @requires(READ_CONTAINERS)
    @rate_pool("containers")
    async def handler(request: web.Request) -> web.Response:
        fmt = _format(request, preview)
        body = await json_fields(request, fields, required=True)
        unique = container_ids(body, "container_ids")
        save_as = _save_as(request, body, fmt)
        stack = body.get("stack_name", save_as or DEFAULT_STACK)
        if not is_stack_name(stack):
            raise invalid_request(
                "stack_name must be lower-case letters, digits, '-' or '_', starting with a letter or digit"
            )
        flags = _flags(body)
        _check_secrets_scope(request, flags["sanitize_secrets"])
        runtime = runtime_for(request)
        namespace = namespace_value(request)
        results = await asyncio.gather(
            *(runtime.export_source(ContainerRef(cid, namespace)) for cid in unique), return_exceptions=True
        )
        sources: list[ExportSource] = []
        seen: set[str] = set()
        warnings: list[str] = []
        for cid, result in zip(unique, results, strict=True):
            if isinstance(result, RuntimeFailure):
                error = from_runtime(
                    result,
                    fallback="CONTAINER_INSPECT_FAILED",
                    fallback_message="Failed to inspect container",
                    container_id=cid,
                )
                how = "was not found" if error.code == "CONTAINER_NOT_FOUND" else "could not be inspected"
                warnings.append(f"Container '{cid}' {how} and was left out")
            elif isinstance(result, BaseException):
                raise result
            else:
                # Two ids (a short id and a name, say) may name one container: export it once.
                if result.id not in seen:
                    seen.add(result.id)
                    sources.append(result)
        if not sources:
            unavailable = [r for r in results if isinstance(r, Unavailable)]
            if len(unavailable) == len(results):
                raise from_runtime(unavailable[0])
            raise ApiError(
                404, "ALL_CONTAINERS_FAILED", "Failed to inspect any containers", warnings=warnings
            )
        try:
            drafts = [
                draft
                for source in sources
                for draft in runtime.compose_services(
                    source,
                    include_volumes=flags["include_volumes"],
                    include_networks=flags["include_networks"],
                )
            ]
        except RuntimeFailure as exc:
            raise runtime_error(exc, "BATCH_EXPORT_FAILED", "Failed to batch export containers") from exc
        export = build(drafts, base=stack, sanitize=flags["sanitize_secrets"], warnings=warnings)
        failed = sum(1 for r in results if isinstance(r, BaseException))
        status = 206 if failed else 200
        if save_as is None:
            return _respond(export, fmt, stack, status)
        saved = await _save(request, save_as, export)
        return web.json_response({**export.to_json(), "stack": saved}, status=status)

    handler.__name__ = "batch_export_preview" if preview else "batch_export"
    return handler


async def _save(request: web.Request, name: str, export: ComposeExport) -> dict[str, Any]:
    """Save ``export`` as the new managed stack ``name``, checked as POST /stacks checks a file;
    answers the stack's detail."""
    limit = request.app[CONFIG].stacks.max_file_bytes
    for text, what in ((export.content, "compose file"), (export.env_content, ".env")):
        size = len(text.encode("utf-8"))
        if size > limit:
            raise validation_error(
                "save_as", f"The exported {what} is {size} bytes, more than a stack's file may be ({limit})"
            )
    stack = await save_stack(request, name, export.content, export.env_content or None, create=True)
    return await stack_detail(request.app[STACKS], stack)


export_container = _single(preview=False)
export_preview = _single(preview=True)
batch_export = _batch(preview=False)
batch_export_preview = _batch(preview=True)
