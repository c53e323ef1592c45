"""Admin views of the airlock backoffice: stored calls (list, filter, detail with the log, edit,
retry, cancel, replay) and connector settings.

Every change goes through app.airlock.service, as the JSON backoffice API does, so the call's
log records the same lines (diffs, author) whichever way an operator acted.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
from email_validator import EmailNotValidError, validate_email
from markupsafe import Markup
from sqladmin import ModelView, action
from sqladmin.filters import AllUniqueStringValuesFilter, StaticValuesFilter
from sqladmin.flash import FlashLevel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import Select
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from wtforms import FloatField, Form, IntegerField, StringField, TextAreaField, ValidationError
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange

from app.admin.common import (
    CheckedIdentifier,
    RefusedInput,
    SluiceView,
    StorableSearch,
    back_path,
    bind_views,
    flash,
    flash_refused,
    refuse_cross_site,
)
from app.airlock import service
from app.airlock.machine import Schedule
from app.airlock.models import AirlockConnector, AsyncCall, CallStatus
from app.airlock.urls import InvalidReplyUrl

if TYPE_CHECKING:
    from fastapi import FastAPI

    from app.state import AppState

MAX_ERROR_URLS = 20
MAX_ERROR_EMAILS = 50


def _author(request: Request) -> str:
    return str(request.session.get("who") or "admin")


def _pre(text: str) -> Markup:
    return Markup('<pre class="mb-0">{}</pre>').format(text) if text else Markup("")


def _json_pre(value: Any) -> Markup:
    return _pre(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


# ------------------------------------------------------------------------------------- filters


class ApiClientFilter:
    """Calls of one API client, picked by name but matched on its id (names need not be unique)."""

    has_operator = False
    template = "sqladmin/filters/lookup_filter.html"
    title = "API client"
    parameter_name = "client"

    async def lookups(
        self, request: Request, model: Any, run_query: Callable[..., Awaitable[Any]]
    ) -> list[tuple[str, str]]:
        rows = await run_query(
            select(AsyncCall.api_client_id, AsyncCall.api_client_name)
            .distinct()
            .order_by(AsyncCall.api_client_name, AsyncCall.api_client_id)
        )
        return [("__all", "All"), *((str(cid), f"{name} ({cid})") for cid, name in rows)]

    async def get_filtered_query(self, query: Select[Any], value: Any, model: Any) -> Select[Any]:
        if value in (None, "", "__all"):
            return query
        return query.where(AsyncCall.api_client_id == str(value))


class CreatedFilter:
    """Calls created on or after, or before, a date or ISO 8601 time (UTC unless an offset is given).

    sqladmin's OperationColumnFilter does not know the UTCDateTime column type: it would compare
    the column with the raw string.
    """

    has_operator = True
    template = "sqladmin/filters/operation_filter.html"
    title = "Created"
    parameter_name = "created"

    def get_operation_options_for_model(self, model: Any) -> list[tuple[str, str]]:
        return [("after", "On or after"), ("before", "Before")]

    async def lookups(
        self, request: Request, model: Any, run_query: Callable[..., Awaitable[Any]]
    ) -> list[tuple[str, str]]:
        return []

    async def get_filtered_query(
        self, query: Select[Any], operation: str, value: Any, model: Any
    ) -> Select[Any]:
        if not value or operation not in ("after", "before"):
            return query
        try:
            when = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise HTTPException(
                400, "Created: give a date or an ISO 8601 time, e.g. 2026-03-01 or 2026-03-01T12:00Z"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if operation == "after":
            return query.where(AsyncCall.created_at >= when)
        return query.where(AsyncCall.created_at < when)


# ------------------------------------------------------------------------------------- calls


class CallEditForm(Form):
    body = TextAreaField(
        "Request body",
        description="JSON when the call's content type is JSON. Left as it is, it is not changed.",
        render_kw={"class": "form-control font-monospace", "rows": 16},
    )
    response_body = TextAreaField(
        "Response body",
        description="The stored answer (only once the call has one). Left as it is, it is not changed.",
        render_kw={"class": "form-control font-monospace", "rows": 16},
    )


class InvalidEdit(RefusedInput):
    pass


def _edited(text: str | None, current: bytes | None, content_type: str | None, what: str) -> bytes | None:
    """The new bytes for a field of the edit form, or None when the text leaves it as it is.

    The form shows the pretty-printed text, so text that pretty-prints the same (the unchanged
    field, or JSON merely re-indented) is no edit: it must log no diff and keep the bytes as stored.
    """
    if text is None:
        return None
    # Browsers send textarea line breaks as CRLF.
    text = text.replace("\r\n", "\n")
    if not text.strip():
        new = b""
    elif content_type is None or "json" in content_type:
        try:
            new = orjson.dumps(orjson.loads(text))
        except orjson.JSONDecodeError as exc:
            if content_type is not None:
                raise InvalidEdit(f"The {what} is not valid JSON ({exc})") from None
            new = text.encode()
    else:
        new = text.encode()
    if service.pretty(new, content_type) == service.pretty(current, content_type):
        return None
    return new


CallOperation = Callable[[AsyncSession, AsyncCall, str, Schedule], Awaitable[object]]


class AsyncCallAdmin(CheckedIdentifier, StorableSearch, SluiceView, ModelView, model=AsyncCall):  # type: ignore[call-arg]
    name = "Async call"
    name_plural = "Async calls"
    icon = "fa-solid fa-clock-rotate-left"
    category = "Airlock"
    # Calls come from the gateway; the 90-day cleanup deletes them. Operators cancel instead.
    can_create = False
    can_delete = False
    page_size = 50
    list_template = "sluice/list.html"
    details_template = "sluice/call_details.html"

    column_list: ClassVar[Any] = [
        AsyncCall.id,
        AsyncCall.created_at,
        AsyncCall.connector,
        AsyncCall.view_name,
        AsyncCall.status,
        AsyncCall.attempts,
        AsyncCall.ttl,
        AsyncCall.next_try,
        AsyncCall.api_client_name,
        AsyncCall.last_error,
    ]
    column_default_sort: ClassVar[Any] = [(AsyncCall.created_at, True)]
    column_sortable_list: ClassVar[Any] = [
        AsyncCall.created_at,
        AsyncCall.connector,
        AsyncCall.view_name,
        AsyncCall.status,
        AsyncCall.attempts,
        AsyncCall.ttl,
        AsyncCall.next_try,
        AsyncCall.api_client_name,
    ]
    # sqladmin casts each column to text for the search, so the id matches in part too.
    column_searchable_list: ClassVar[Any] = [
        AsyncCall.id,
        AsyncCall.view_name,
        AsyncCall.api_client_name,
        AsyncCall.request_id,
    ]
    column_filters: ClassVar[Any] = [
        AllUniqueStringValuesFilter(AsyncCall.connector, title="Connector"),
        StaticValuesFilter(AsyncCall.status, [(s.value, s.value) for s in CallStatus], title="Status"),
        ApiClientFilter(),
        CreatedFilter(),
    ]
    column_labels: ClassVar[Any] = {
        AsyncCall.id: "$reply_id",
        AsyncCall.api_client_name: "API client",
        AsyncCall.api_client_id: "API client id",
        AsyncCall.view_name: "Operation",
        AsyncCall.body: "Request body",
        AsyncCall.ttl: "TTL",
    }
    column_formatters: ClassVar[Any] = {
        AsyncCall.last_error: lambda m, a: (
            m.last_error[:80] + "…" if m.last_error and len(m.last_error) > 80 else m.last_error
        ),
    }
    column_details_list: ClassVar[Any] = [
        AsyncCall.id,
        AsyncCall.status,
        AsyncCall.connector,
        AsyncCall.view_name,
        AsyncCall.method,
        AsyncCall.path,
        AsyncCall.path_params,
        AsyncCall.query_string,
        AsyncCall.request_headers,
        AsyncCall.content_type,
        AsyncCall.body,
        AsyncCall.api_client_id,
        AsyncCall.api_client_name,
        AsyncCall.org_id,
        AsyncCall.request_id,
        AsyncCall.respond_async,
        AsyncCall.reply_url,
        AsyncCall.response_status,
        AsyncCall.response_content_type,
        AsyncCall.response_body,
        AsyncCall.attempts,
        AsyncCall.ttl,
        AsyncCall.delay,
        AsyncCall.next_try,
        AsyncCall.last_error,
        AsyncCall.locked_by,
        AsyncCall.locked_until,
        AsyncCall.created_at,
        AsyncCall.updated_at,
        AsyncCall.finished_at,
    ]
    column_formatters_detail: ClassVar[Any] = {
        AsyncCall.body: lambda m, a: _pre(service.pretty(m.body, m.content_type)),
        AsyncCall.response_body: lambda m, a: _pre(service.pretty(m.response_body, m.response_content_type)),
        AsyncCall.path_params: lambda m, a: _json_pre(m.path_params),
        AsyncCall.request_headers: lambda m, a: _json_pre(m.request_headers),
        AsyncCall.last_error: lambda m, a: _pre(m.last_error or ""),
    }
    # Only these two are editable, and only through service.edit_call (see update_model).
    form_columns: ClassVar[Any] = [AsyncCall.body, AsyncCall.response_body]

    # --------------------------------------------------------------------------- reading

    @staticmethod
    def _call_id(pk: str) -> uuid.UUID | None:
        try:
            return uuid.UUID(pk)
        except ValueError:
            return None

    async def details_context(self, request: Request) -> dict[str, Any]:
        call_id = self._call_id(request.path_params["pk"])
        if call_id is None:
            return {"call_log": []}
        async with self.sluice.sessionmaker() as session:
            return {"call_log": list(await service.call_log(session, call_id))}

    # --------------------------------------------------------------------------- editing

    async def scaffold_form(self, rules: list[str] | None = None) -> type[Form]:
        return CallEditForm

    async def get_form_data_for_edit(self, obj: Any) -> dict[str, Any]:
        return {
            "body": service.pretty(obj.body, obj.content_type),
            "response_body": service.pretty(obj.response_body, obj.response_content_type),
        }

    async def update_model(self, request: Request, pk: str, data: dict[str, Any]) -> Any:
        """Save through service.edit_call, which logs a unified diff and the author of each edit.

        Errors raised here (invalid JSON, a call a worker holds) show above the form.
        """
        call_id = self._call_id(pk)
        if call_id is None:
            raise InvalidEdit("Not an async call id")
        async with self.sluice.sessionmaker.begin() as session:
            call = await service.get_call(session, call_id)
            body = _edited(data.get("body"), call.body, call.content_type, "request body")
            response = _edited(
                data.get("response_body"), call.response_body, call.response_content_type, "response body"
            )
            if body is None and response is None:
                flash(request, FlashLevel.info, "Nothing was changed.")
                return call
            await service.edit_call(session, call, author=_author(request), body=body, response_body=response)
        flash(request, FlashLevel.success, f"Call {call.id} edited; the diff is in its log.")
        return call

    # --------------------------------------------------------------------------- actions

    async def _act(
        self, request: Request, verb: str, operation: CallOperation, *, wake: bool = True
    ) -> Response:
        """Apply `operation` to every selected call in one transaction, then go back.

        A call whose state refuses the operation is reported and skipped; the others proceed,
        as with the API's bulk retry. The service checks before it changes anything, so a refused
        call leaves nothing half-done in the transaction.
        """
        refuse_cross_site(request)
        state = self.sluice
        author = _author(request)
        done: list[str] = []
        refused: list[str] = []
        raw = list(
            dict.fromkeys(p.strip() for p in request.query_params.get("pks", "").split(",") if p.strip())
        )
        async with state.sessionmaker.begin() as session:
            for pk in raw:
                call_id = self._call_id(pk)
                call = await session.get(AsyncCall, call_id) if call_id is not None else None
                if call is None:
                    refused.append(f"{pk}: no such call")
                    continue
                schedule = (await service.get_connector(session, call.connector, state.settings)).schedule(
                    state.settings
                )
                try:
                    await operation(session, call, author, schedule)
                except service.CallStateConflict as exc:
                    refused.append(f"{call.id}: {exc.detail or exc.title}")
                    continue
                done.append(str(call.id))
            if done and wake:
                await service.wake_workers(session)
        if done and wake:
            state.airlock_wake.set()
        if not raw:
            flash(request, FlashLevel.warning, "Select at least one call.")
        if done:
            flash(request, FlashLevel.success, f"{verb} {len(done)} call{'s' if len(done) > 1 else ''}.")
        flash_refused(request, verb, refused)
        return RedirectResponse(back_path(request, self.identity), status_code=302)

    @action(name="retry", label="Retry")
    async def retry_action(self, request: Request) -> Response:
        """Back to CALL_RETRY, or to RESPONSE_RETRY when the reply failed, due now, ttl reset."""

        async def run(session: AsyncSession, call: AsyncCall, author: str, schedule: Schedule) -> object:
            return await service.retry_call(session, call, phase=None, author=author, schedule=schedule)

        return await self._act(request, "Retried", run)

    @action(name="retry-reply", label="Retry reply")
    async def retry_reply_action(self, request: Request) -> Response:
        async def run(session: AsyncSession, call: AsyncCall, author: str, schedule: Schedule) -> object:
            return await service.retry_call(
                session, call, phase=CallStatus.RESPONSE_RETRY, author=author, schedule=schedule
            )

        return await self._act(request, "Retried", run)

    @action(name="replay", label="Replay reply", confirmation_message="Deliver the reply again?")
    async def replay_action(self, request: Request) -> Response:
        async def run(session: AsyncSession, call: AsyncCall, author: str, schedule: Schedule) -> object:
            return await service.replay_reply(session, call, author=author, schedule=schedule)

        return await self._act(request, "Replayed", run)

    @action(name="cancel", label="Cancel", confirmation_message="Cancel the call for good?")
    async def cancel_action(self, request: Request) -> Response:
        async def run(session: AsyncSession, call: AsyncCall, author: str, schedule: Schedule) -> object:
            return await service.cancel_call(session, call, author=author)

        return await self._act(request, "Cancelled", run, wake=False)


# ------------------------------------------------------------------------------------ connectors


class LinesField(TextAreaField):
    """A list of strings edited as text: one per line, or separated by commas or spaces."""

    data: list[str]

    def _value(self) -> str:
        if self.raw_data:
            return str(self.raw_data[0])
        return "\n".join(self.data or [])

    def process_formdata(self, valuelist: list[Any]) -> None:
        if valuelist:
            # Neither URLs nor e-mail addresses contain whitespace, so it separates items too.
            items = [item for item in re.split(r"[\s,]+", str(valuelist[0])) if item]
            self.data = list(dict.fromkeys(items))
        else:
            self.data = []


def connector_form(state: AppState, *, create: bool) -> type[Form]:
    """The connector form; its checks need the app's URL policy and its defaults the settings."""
    settings = state.settings
    # Created first so that WTForms, which orders fields by creation, shows it first.
    name_field = StringField(
        "Name",
        # DataRequired, unlike InputRequired, sees the value once stripped: blanks are refused.
        [DataRequired(), Length(max=100)],
        default=state.partner.name,
        filters=[lambda v: v.strip() if isinstance(v, str) else v],
        description="The connector (upstream) name; the partner's is the default.",
        render_kw={"class": "form-control"},
    )

    class ConnectorForm(Form):
        ttl = IntegerField(
            "TTL",
            [InputRequired(), NumberRange(min=1, max=100)],
            default=settings.airlock_ttl,
            description="Attempts per phase (the call, then the reply).",
            render_kw={"class": "form-control"},
        )
        delay = FloatField(
            "Delay (seconds)",
            [InputRequired(), NumberRange(max=86_400)],
            default=settings.airlock_delay,
            description="The first pause between attempts; it doubles after each failure.",
            render_kw={"class": "form-control"},
        )
        error_urls = LinesField(
            "Error URLs",
            description=f"Where failed calls are reported (signed POST). One per line, at most {MAX_ERROR_URLS}.",
            render_kw={"class": "form-control", "rows": 4},
        )
        error_emails = LinesField(
            "Error e-mails",
            description=f"Who is e-mailed about failed calls. One per line, at most {MAX_ERROR_EMAILS}.",
            render_kw={"class": "form-control", "rows": 4},
        )

        def validate_delay(self, field: FloatField) -> None:
            if field.data is not None and field.data <= 0:
                raise ValidationError("The delay must be more than 0 seconds.")

        def validate_error_urls(self, field: LinesField) -> None:
            if len(field.data) > MAX_ERROR_URLS:
                raise ValidationError(f"At most {MAX_ERROR_URLS} URLs.")
            checked = []
            for url in field.data:
                try:
                    checked.append(state.url_policy.check(url, what="error"))
                except InvalidReplyUrl as exc:
                    raise ValidationError(f"{url}: {exc.detail or exc.title}") from None
            field.data = checked

        def validate_error_emails(self, field: LinesField) -> None:
            if len(field.data) > MAX_ERROR_EMAILS:
                raise ValidationError(f"At most {MAX_ERROR_EMAILS} e-mail addresses.")
            normalized = []
            for email in field.data:
                try:
                    normalized.append(validate_email(email, check_deliverability=False).normalized)
                except EmailNotValidError as exc:
                    raise ValidationError(f"{email}: {exc}") from None
            field.data = normalized

    if not create:
        return ConnectorForm
    return type("ConnectorCreateForm", (ConnectorForm,), {"name": name_field})


class ConnectorExists(RefusedInput):
    pass


def _join(values: Sequence[str] | None) -> str:
    return ", ".join(values or [])


class AirlockConnectorAdmin(CheckedIdentifier, SluiceView, ModelView, model=AirlockConnector):  # type: ignore[call-arg]
    name = "Connector"
    name_plural = "Connectors"
    icon = "fa-solid fa-plug"
    category = "Airlock"
    # Deleting a row would silently drop its error secret (receivers verify with it).
    can_delete = False
    list_template = "sluice/list.html"

    column_list: ClassVar[Any] = [
        AirlockConnector.name,
        AirlockConnector.ttl,
        AirlockConnector.delay,
        AirlockConnector.error_urls,
        AirlockConnector.error_emails,
        AirlockConnector.updated_at,
        AirlockConnector.updated_by,
    ]
    column_details_list: ClassVar[Any] = column_list
    column_labels: ClassVar[Any] = {
        AirlockConnector.ttl: "TTL",
        AirlockConnector.delay: "Delay (s)",
        AirlockConnector.error_urls: "Error URLs",
        AirlockConnector.error_emails: "Error e-mails",
    }
    column_formatters: ClassVar[Any] = {
        AirlockConnector.error_urls: lambda m, a: _join(m.error_urls),
        AirlockConnector.error_emails: lambda m, a: _join(m.error_emails),
    }
    column_formatters_detail: ClassVar[Any] = column_formatters
    column_sortable_list: ClassVar[Any] = [AirlockConnector.name, AirlockConnector.updated_at]
    # Never error_secret: it is shown once, by the API's rotate-secret.
    form_columns: ClassVar[Any] = [
        AirlockConnector.name,
        AirlockConnector.ttl,
        AirlockConnector.delay,
        AirlockConnector.error_urls,
        AirlockConnector.error_emails,
    ]
    column_export_list: ClassVar[Any] = column_list
    # The name is the primary key: set on creation, never renamed. scaffold_form tells the two
    # forms apart by these rules, the only thing sqladmin passes it.
    form_create_rules: ClassVar[list[str]] = ["name", "ttl", "delay", "error_urls", "error_emails"]
    form_edit_rules: ClassVar[list[str]] = ["ttl", "delay", "error_urls", "error_emails"]

    async def scaffold_form(self, rules: list[str] | None = None) -> type[Form]:
        return connector_form(self.sluice, create=bool(rules) and "name" in (rules or []))

    async def _save(self, request: Request, name: str, data: dict[str, Any], *, create: bool) -> Any:
        state = self.sluice
        async with state.sessionmaker.begin() as session:
            exists = await session.get(AirlockConnector, name) is not None
            if create and exists:
                raise ConnectorExists(f"A connector named {name!r} exists already: edit it instead.")
            if not create and not exists:
                raise ConnectorExists(f"No connector named {name!r}.")
            row = await service.update_connector(
                session,
                name,
                state.settings,
                _author(request),
                ttl=data["ttl"],
                delay=data["delay"],
                error_urls=list(data["error_urls"]),
                error_emails=list(data["error_emails"]),
            )
        flash(
            request,
            FlashLevel.success,
            f"Connector {name} saved; new calls and retries use it within seconds.",
        )
        return row

    async def insert_model(self, request: Request, data: dict[str, Any]) -> Any:
        return await self._save(request, data["name"], data, create=True)

    async def update_model(self, request: Request, pk: str, data: dict[str, Any]) -> Any:
        return await self._save(request, pk, data, create=False)


def airlock_views(app: FastAPI) -> list[type[ModelView]]:
    """The airlock's views, bound to `app` (see app.admin.common.SluiceView)."""
    return bind_views(app, (AsyncCallAdmin, AirlockConnectorAdmin))
