"""Pages of this server's configuration: clients, services with their endpoints, access rights (I/O).

Every form posts back to its page (PRG: a change answers 303 to the page with a note; a refusal renders the
page again with the error beside the field, and the status of the error).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web
from yarl import URL

from gateway.admin.handlers.common import client_in_path, service_in_path
from gateway.admin.schema import MAX_LIMIT
from gateway.admin.web.confirm import ask, confirmed
from gateway.admin.web.guard import Form, page
from gateway.admin.web.nav import nav_for
from gateway.admin.web.ops import FormError, User, authorize, form_number, note_error, run_op
from gateway.admin.web.render import Column, redirect, render, table
from gateway.errors import GatewayError, RequestError
from gateway.identifiers import ServiceId, parse_client
from gateway.serverconf import CLIENT_STATUSES, IS_AUTH_MODES, openapi

CLIENT_FIELDS = {"id": "Identifier", "status": "Status", "is_auth": "IS authentication", "body_logging": "Body logging"}
CLIENT_UPDATE_FIELDS = {"is_auth": "IS authentication", "body_logging": "Body logging"}
CERT_FIELDS = {"pem": "Certificate (PEM)"}
SERVICE_FIELDS = {"id": "Identifier", "url": "URL", "timeout_seconds": "Timeout (seconds)",
                  "openapi_url": "OpenAPI URL", "enabled": "Enabled", "disabled_notice": "Notice while disabled"}
ENDPOINT_FIELDS = {"method": "Method", "path": "Path pattern"}
ACCESS_FIELDS = {"subject": "Subject", "method": "Method", "path": "Path pattern"}


def _done(request: web.Request) -> str | None:
    return request.query.get("done")


def back(request: web.Request, note: str, path: str | None = None) -> web.Response:
    """303 to ``path`` (default: this page) with ``note`` shown there."""
    return redirect(str(URL(path or request.path).with_query({"done": note})))


# ----------------------------------------------------------------------------------------------------- clients

async def _clients_page(request: web.Request, user: User, err: FormError | None = None,
                        status: int = 200) -> web.Response:
    listed = await run_op(request, user, "listClients", query={"limit": str(MAX_LIMIT)})
    t = table(request, listed["items"], (
        Column(key="id", label="Identifier"), Column(key="type", label="Type"), Column(key="status", label="Status"),
        Column(key="is_auth", label="IS authentication"), Column(key="body_logging", label="Body logging"),
    ), caption="Clients", default_sort="id", total=listed["total"])
    return render("clients.html", status=status, user=user, nav=nav_for(user, "clients"), title="Clients", t=t,
                  err=err, done=_done(request), statuses=CLIENT_STATUSES, is_auth_modes=IS_AUTH_MODES)


@page
async def clients(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    return await _clients_page(request, user)


@page
async def add_client(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    body: dict[str, Any] = {"id": form.get("id", "").strip(), "body_logging": form.get("body_logging") == "true"}
    for name in ("status", "is_auth"):
        if form.get(name):
            body[name] = form[name]
    try:
        await run_op(request, user, "addClient", body)
    except GatewayError as e:
        note_error(request, e)
        err = FormError.of("add", e, form, CLIENT_FIELDS, identifier="id")
        return await _clients_page(request, user, err, e.status)
    return back(request, f"Client {body['id']} added.")


async def _client_page(request: web.Request, user: User, err: FormError | None = None,
                       status: int = 200) -> web.Response:
    client = await run_op(request, user, "getClient")
    return render("client.html", status=status, user=user, nav=nav_for(user, "clients"),
                  title=f"Client {client['id']}", client=client, err=err, done=_done(request),
                  is_auth_modes=IS_AUTH_MODES, statuses=CLIENT_STATUSES)


@page
async def client(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    return await _client_page(request, user)


@page
async def update_client(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    body = {"is_auth": form.get("is_auth", ""), "body_logging": form.get("body_logging") == "true"}
    try:
        await run_op(request, user, "updateClient", body)
    except GatewayError as e:
        note_error(request, e)
        return await _client_page(request, user, FormError.of("update", e, form, CLIENT_UPDATE_FIELDS), e.status)
    return back(request, "Client changed.")


@page
async def set_client_status(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    try:
        await run_op(request, user, "setClientStatus", {"status": form.get("status", "")})
    except GatewayError as e:
        note_error(request, e)
        err = FormError.of("status", e, form, {"status": "Status"}, only="status")
        return await _client_page(request, user, err, e.status)
    return back(request, f"Client marked {form.get('status')}.", path=_parent(request))


@page
async def register_client(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    """``registerClient``: a client registration request to the central server, signed by this server."""
    try:
        sent = await run_op(request, user, "registerClient")
    except GatewayError as e:
        if e.status == 403:
            raise
        note_error(request, e)
        return await _client_page(request, user, FormError.of("register", e, form, {}), e.status)
    return back(request, f"Registration request {sent['id']} sent: {sent['state']} at the central server, where a "
                "registration officer approves it; then set the status to registered.", path=_parent(request))


@page
async def add_is_cert(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    try:
        result = await run_op(request, user, "addIsCert", {"pem": form.get("pem", "")})
    except GatewayError as e:
        note_error(request, e)
        return await _client_page(request, user, FormError.of("cert", e, form, CERT_FIELDS), e.status)
    return back(request, f"Certificate {result['fingerprint']} registered.", path=_parent(request))


def _parent(request: web.Request) -> str:
    """The page a sub-form of it posts from (``/ui/clients/X/is-certs`` -> ``/ui/clients/X``)."""
    return request.path.rsplit("/", 1)[0]


# ---------------------------------------------------------------------------------------------------- services

def _service_body(form: Form, *, with_id: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"enabled": form.get("enabled") == "true"}
    if with_id:
        body["id"] = form.get("id", "").strip()
    for name in ("url", "disabled_notice"):
        if name in form:
            body[name] = form[name].strip()
    if form.get("openapi_url", "").strip():
        body["openapi_url"] = form["openapi_url"].strip()
    timeout = form_number(form, "timeout_seconds")
    if timeout is not None:
        body["timeout_seconds"] = timeout
    return body


async def _services_page(request: web.Request, user: User, err: FormError | None = None,
                         status: int = 200) -> web.Response:
    listed = await run_op(request, user, "listServices", query={"limit": str(MAX_LIMIT)})
    t = table(request, listed["items"], (
        Column(key="id", label="Identifier"), Column(key="url", label="URL"),
        Column(key="timeout_seconds", label="Timeout (s)"), Column(key="enabled", label="Enabled"),
        Column(key="endpoints", label="Endpoints", sortable=False),
    ), caption="Services", default_sort="id", total=listed["total"])
    return render("services.html", status=status, user=user, nav=nav_for(user, "services"), title="Services",
                  t=t, err=err, done=_done(request))


@page
async def services(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    return await _services_page(request, user)


@page
async def add_service(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    try:
        body = _service_body(form, with_id=True)
        await run_op(request, user, "addService", body)
    except GatewayError as e:
        note_error(request, e)
        err = FormError.of("add", e, form, SERVICE_FIELDS, identifier="id")
        return await _services_page(request, user, err, e.status)
    return back(request, f"Service {body['id']} added.")


OPENAPI_FIELDS = {"id": "Identifier", "openapi_url": "OpenAPI URL", "url": "Service URL",
                  "timeout_seconds": "Timeout (seconds)"}


@page
async def add_service_from_openapi(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    """Fetch the OpenAPI 3 description, then ``addService`` with its operations as endpoints; the service's
    URL is the form's, else the description's first absolute server URL (:mod:`gateway.serverconf.openapi`)."""
    try:
        authorize(request, user, "addService")  # the role first: nothing is fetched for a user who may not add
        body = _service_body(form, with_id=True)
        source = form.get("openapi_url", "").strip()
        if not source:
            raise RequestError("body.openapi_url is needed: the URL of the service's OpenAPI 3 description")
        doc, endpoints = openapi.endpoints_of(await openapi.fetch_description(source))
        url = body.get("url") or openapi.server_url(doc)
        if not url:
            raise RequestError("body.url is needed: the description names no absolute http(s) server URL")
        body.update(url=url, openapi_url=source, endpoints=[{"method": e.method, "path": e.path} for e in endpoints])
        await run_op(request, user, "addService", body)
    except GatewayError as e:
        if e.status == 403:
            raise
        note_error(request, e)
        err = FormError.of("openapi", e, form, OPENAPI_FIELDS, identifier="id")
        return await _services_page(request, user, err, e.status)
    return back(request, f"Service {body['id']} added with {len(endpoints)} endpoints from its OpenAPI description.",
                path="/ui/services")


async def _service_page(request: web.Request, user: User, err: FormError | None = None,
                        status: int = 200) -> web.Response:
    service = await run_op(request, user, "getService")
    rights = await run_op(request, user, "listAccessRights", query={"limit": str(MAX_LIMIT)})
    t = table(request, rights["items"], (
        Column(key="subject", label="Subject"), Column(key="method", label="Method"),
        Column(key="path", label="Path"), Column(key="revoke", label="Revoke", sortable=False),
    ), caption="Access rights", default_sort="subject", total=rights["total"])
    encoded = ServiceId.parse(service["id"], encoded=False).encoded_id()
    return render("service.html", status=status, user=user, nav=nav_for(user, "services"),
                  title=f"Service {service['id']}", service=service, t=t, err=err, done=_done(request),
                  base=f"/ui/services/{encoded}", revoke_url=_revoke_url, endpoint_url=_endpoint_url)


def _endpoint_url(base: str, endpoint: dict[str, str]) -> str:
    """The remove form's action of an endpoint: it in the query, as the API's removeEndpoint takes it."""
    return str(URL(f"{base}/endpoints/remove").with_query({"method": endpoint["method"], "path": endpoint["path"]}))


def _revoke_url(base: str, right: dict[str, str]) -> str:
    """The revoke form's action: the rule in the query, as the API's revokeAccess takes it."""
    return str(URL(f"{base}/access-rights/revoke").with_query(
        {"subject": right["subject"], "method": right["method"], "path": right["path"]}))


@page
async def service(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    return await _service_page(request, user)


@page
async def update_service(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    try:
        await run_op(request, user, "updateService", _service_body(form, with_id=False))
    except GatewayError as e:
        note_error(request, e)
        return await _service_page(request, user, FormError.of("update", e, form, SERVICE_FIELDS), e.status)
    return back(request, "Service changed.")


@page
async def set_enabled(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    """The enable/disable button: ``updateService`` with ``enabled`` alone."""
    enabled = form.get("enabled") == "true"
    try:
        await run_op(request, user, "updateService", {"enabled": enabled})
    except GatewayError as e:
        note_error(request, e)
        return await _service_page(request, user, FormError.of("update", e, form, SERVICE_FIELDS), e.status)
    return back(request, "Service enabled." if enabled else "Service disabled: its clients get the notice.",
                path=_parent(request))


@page
async def add_endpoint(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    body = {"method": form.get("method", "").strip(), "path": form.get("path", "").strip()}
    try:
        await run_op(request, user, "addEndpoint", body)
    except GatewayError as e:
        note_error(request, e)
        return await _service_page(request, user, FormError.of("endpoint", e, form, ENDPOINT_FIELDS), e.status)
    return back(request, f"Endpoint {body['method']} {body['path']} added.", path=_parent(request))


@page
async def grant_access(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    body = {"subject": form.get("subject", "").strip(), "method": form.get("method", "").strip() or "*",
            "path": form.get("path", "").strip() or "**"}
    try:
        await run_op(request, user, "grantAccess", body)
    except GatewayError as e:
        note_error(request, e)
        err = FormError.of("grant", e, form, ACCESS_FIELDS, identifier="subject")
        return await _service_page(request, user, err, e.status)
    return back(request, f"Access granted to {body['subject']}.", path=_parent(request))


@page
async def revoke_access(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    q = request.query
    query = {"subject": q.get("subject", ""), "method": q.get("method", "*"), "path": q.get("path", "**")}
    return await _remove(request, user, form, op="revokeAccess",
                         question=f"Revoke the access of {query['subject']} to {query['method']} {query['path']}?",
                         consequence="Its requests to this service are refused from now on, unless another "
                                     "right grants them.",
                         back_to=_parent(request).rsplit("/", 1)[0], nav="services",
                         note=f"Access of {query['subject']} revoked.", query=query)


# ------------------------------------------------------------------------------------------------ local groups

GROUP_FIELDS = {"code": "Code", "description": "Description"}
MEMBER_FIELDS = {"client": "Client"}
GROUPS = "/ui/local-groups"


async def _groups_page(request: web.Request, user: User, err: FormError | None = None,
                       status: int = 200) -> web.Response:
    listed = await run_op(request, user, "listLocalGroups", query={"limit": str(MAX_LIMIT)})
    t = table(request, listed["items"], (
        Column(key="code", label="Code"), Column(key="members", label="Members", sortable=False),
        Column(key="remove", label="Remove", sortable=False),
    ), caption="Local groups", default_sort="code", total=listed["total"])
    return render("groups.html", status=status, user=user, nav=nav_for(user, "groups"), title="Local groups", t=t,
                  err=err, done=_done(request), encoded=_encoded_client)


def _encoded_client(text: str) -> str:
    """A member as the API lists it (``/``-joined) in the ``:``-joined form of a path."""
    return quote(parse_client(text, encoded=False).encoded_id(), safe=":")


@page
async def groups(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    return await _groups_page(request, user)


@page
async def add_group(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    body = {"code": form.get("code", "").strip(), "description": form.get("description", "").strip()}
    try:
        await run_op(request, user, "addLocalGroup", body)
    except GatewayError as e:
        note_error(request, e)
        return await _groups_page(request, user, FormError.of("group", e, form, GROUP_FIELDS, identifier="code"),
                                  e.status)
    return back(request, f"Local group {body['code']} added; grant it access as LOCALGROUP:{body['code']}.")


@page
async def add_group_member(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    code = request.match_info["code"]
    body = {"client": form.get("client", "").strip()}
    try:
        await run_op(request, user, "addLocalGroupMember", body)
    except GatewayError as e:
        note_error(request, e)
        err = FormError.of(f"member-{code}", e, form, MEMBER_FIELDS, only="client")
        return await _groups_page(request, user, err, e.status)
    return back(request, f"{body['client']} added to {code}.", path=GROUPS)


# ---------------------------------------------------------------------------------------------------- removals

async def _remove(request: web.Request, user: User, form: Form, *, op: str, question: str, consequence: str,
                  back_to: str, nav: str, note: str, query: dict[str, str] | None = None) -> web.StreamResponse:
    """A removal: the confirmation page first (:mod:`gateway.admin.web.confirm`), then the API operation
    ``op`` and 303 to ``back_to`` with ``note``. The role is checked before the question is asked, so a user
    who may not remove is refused at once (403)."""
    authorize(request, user, op, query=query)
    if not confirmed(form):
        return ask(request, user, question=question, consequence=consequence, button="Remove", cancel=back_to,
                   nav=nav)
    await run_op(request, user, op, query=query)
    return back(request, note, path=back_to)


def _service_path(request: web.Request) -> str:
    return f"/ui/services/{request.match_info['service_id']}"


def _client_path(request: web.Request) -> str:
    return f"/ui/clients/{request.match_info['client_id']}"


@page
async def remove_client(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    name = client_in_path(request)
    return await _remove(request, user, form, op="removeClient", question=f"Remove client {name}?",
                         consequence="Its services, their endpoints and access rights are removed with it.",
                         back_to="/ui/clients", nav="clients", note=f"Client {name} removed.")


@page
async def remove_is_cert(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    fp = request.match_info["fingerprint"]
    return await _remove(request, user, form, op="removeIsCert",
                         question=f"Remove the information-system certificate {fp[:16]}…?",
                         consequence="An information system that presents it can no longer connect as this client.",
                         back_to=_client_path(request), nav="clients", note="Certificate removed.")


@page
async def remove_service(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    name = service_in_path(request)
    return await _remove(request, user, form, op="removeService", question=f"Remove service {name}?",
                         consequence="Its endpoints and every access right to it are removed with it.",
                         back_to="/ui/services", nav="services", note=f"Service {name} removed.")


@page
async def remove_endpoint(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    query = {"method": request.query.get("method", "*"), "path": request.query.get("path", "**")}
    return await _remove(request, user, form, op="removeEndpoint",
                         question=f"Remove the endpoint {query['method']} {query['path']}?",
                         consequence="The access rights granted on this endpoint are removed with it.",
                         back_to=_service_path(request), nav="services",
                         note=f"Endpoint {query['method']} {query['path']} removed.", query=query)


@page
async def remove_group(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    code = request.match_info["code"]
    return await _remove(request, user, form, op="removeLocalGroup", question=f"Remove local group {code}?",
                         consequence="Its members and every access right granted to LOCALGROUP:"
                                     f"{code} are removed with it.",
                         back_to=GROUPS, nav="groups", note=f"Local group {code} removed.")


@page
async def remove_group_member(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    code = request.match_info["code"]
    member = client_in_path(request)
    return await _remove(request, user, form, op="removeLocalGroupMember",
                         question=f"Remove {member} from local group {code}?",
                         consequence=f"{member} loses the access rights it had only through {code}.",
                         back_to=GROUPS, nav="groups", note=f"{member} removed from {code}.")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/local-groups", groups)
    app.router.add_post("/local-groups", add_group)
    app.router.add_post("/local-groups/{code}/members", add_group_member)
    app.router.add_post("/local-groups/{code}/remove", remove_group)
    app.router.add_post("/local-groups/{code}/members/{client_id}/remove", remove_group_member)
    app.router.add_get("/clients", clients)
    app.router.add_post("/clients", add_client)
    app.router.add_get("/clients/{client_id}", client)
    app.router.add_post("/clients/{client_id}", update_client)
    app.router.add_post("/clients/{client_id}/is-certs", add_is_cert)
    app.router.add_post("/clients/{client_id}/status", set_client_status)
    app.router.add_post("/clients/{client_id}/remove", remove_client)
    app.router.add_post("/clients/{client_id}/register", register_client)
    app.router.add_post("/clients/{client_id}/is-certs/{fingerprint}/remove", remove_is_cert)
    app.router.add_get("/services", services)
    app.router.add_post("/services", add_service)
    app.router.add_post("/services/from-openapi", add_service_from_openapi)
    app.router.add_get("/services/{service_id}", service)
    app.router.add_post("/services/{service_id}", update_service)
    app.router.add_post("/services/{service_id}/endpoints", add_endpoint)
    app.router.add_post("/services/{service_id}/endpoints/remove", remove_endpoint)
    app.router.add_post("/services/{service_id}/remove", remove_service)
    app.router.add_post("/services/{service_id}/enabled", set_enabled)
    app.router.add_post("/services/{service_id}/access-rights", grant_access)
    app.router.add_post("/services/{service_id}/access-rights/revoke", revoke_access)


__all__ = ["add_routes"]
