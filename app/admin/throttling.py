"""Admin views of outbound throttling: configurations (list, filters, detail with their runtime
versions, edit, deploy / undeploy) and the runtime versions the limiters enforce (read-only).

Every change goes through app.throttling.service, as the authoring API does, with the admin's own
API client as the author; a change that touches deployed rules is then announced with
`ThrottleGate.changed()`, so that every replica reloads them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
from jinja2 import ChoiceLoader, DictLoader
from sqladmin import Admin, ModelView, action
from sqladmin.filters import AllUniqueStringValuesFilter, BooleanFilter, StaticValuesFilter
from sqladmin.flash import FlashLevel
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import Select
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from wtforms import Form, IntegerField, SelectMultipleField, StringField, TextAreaField, ValidationError
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

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
from app.clients.service import Principal
from app.throttling import patterns, service
from app.throttling.errors import AuthoringError
from app.throttling.models import ConfigState, ThrottlingConfig, ThrottlingRuntime

if TYPE_CHECKING:
    from fastapi import FastAPI


logger = logging.getLogger("sluice.throttling")

# Config uids are UUIDs; anything else (a NUL byte, say) must be a 404, not a database error.
_UID = re.compile(r"[\w-]{1,36}", re.ASCII)

DETAILS = """\
{% extends "sqladmin/details.html" %}
{% block content %}
{% include "sluice/messages.html" %}
{{ super() }}
{% endblock %}
{% block details_table %}
{{ super() }}
<h3 class="mt-4" id="deployability">Deployment</h3>
<ul class="mb-3">
  <li id="can-deploy">Can deploy:
    {% if can_deploy.validationStatus == "ok" %}yes{% else %}no —
    {% for error in can_deploy.errors %}{{ error.message }} ({{ error.code }}){% if not loop.last %}; {% endif %}{% endfor %}
    {% endif %}
  </li>
  <li id="enforced-here">This replica ({{ instance }}) enforces:
    {% if enforced %}version {{ enforced | join(", ") }}{% else %}nothing of this configuration{% endif %}
  </li>
</ul>
<h3 class="mt-4" id="runtime-versions">Runtime versions</h3>
<div class="table-responsive">
  <table class="table card-table table-vcenter table-bordered">
    <thead>
      <tr>
        <th>Version</th><th>Status</th><th>urlPattern</th><th>Methods</th><th>maxThroughput</th>
        <th>Deployed at</th><th>Undeployed at</th>
      </tr>
    </thead>
    <tbody>
      {% for row in runtime_rows %}
      <tr class="runtime-version">
        <td><a href="{{ url_for('admin:details', identity='throttling-runtime', pk=row.id) }}">{{ row.version }}</a></td>
        <td>{{ runtime_status(row) }}</td>
        <td>{{ row.url_pattern }}</td>
        <td>{{ row.methods | join(", ") }}</td>
        <td>{{ row.max_throughput }}</td>
        <td class="text-nowrap">{{ row.deployed_at }}</td>
        <td class="text-nowrap">{{ row.undeployed_at or "" }}</td>
      </tr>
      {% else %}
      <tr><td colspan="7" class="text-muted">Never deployed.</td></tr>
      {% endfor %}
    </tbody>
  </table>
</div>
{% endblock %}
"""

TEMPLATES = {"sluice/throttling_details.html": DETAILS}


class InvalidConfig(RefusedInput):
    """A refused edit; sqladmin shows its message above the form (HTTP 400)."""


class Refused(Exception):
    pass


def _join(values: list[str] | None) -> str:
    return ", ".join(values or [])


def runtime_status(row: ThrottlingRuntime) -> str:
    """Active, or draining: undeployed, its queued calls kept until the maintenance loop drops it."""
    if row.active:
        return "active"
    if row.undeployed_at is None:
        return "inactive"
    return f"draining since {row.undeployed_at:%Y-%m-%d %H:%M:%S} UTC"


# ------------------------------------------------------------------------------ configurations


class ConfigEditForm(Form):
    name = StringField(
        "Name",
        [Optional(), Length(max=500)],
        filters=[lambda v: v.strip() if isinstance(v, str) else v],
        render_kw={"class": "form-control"},
    )
    description = TextAreaField("Description", render_kw={"class": "form-control", "rows": 3})
    url_pattern = StringField(
        "urlPattern",
        [DataRequired(), Length(max=2000)],
        filters=[lambda v: v.strip() if isinstance(v, str) else v],
        description="An absolute http(s) URL; `*` in the path or query matches anything, `/` included.",
        render_kw={"class": "form-control"},
    )
    methods = SelectMultipleField(
        "Methods",
        [DataRequired()],
        choices=[(m, m) for m in service.HTTP_METHODS],
        render_kw={"class": "form-control"},
    )
    max_throughput = IntegerField(
        "maxThroughput",
        [InputRequired(), NumberRange(min=service.MIN_THROUGHPUT, max=service.MAX_THROUGHPUT)],
        description=f"Calls per second, {service.MIN_THROUGHPUT} to {service.MAX_THROUGHPUT}.",
        render_kw={"class": "form-control"},
    )

    def validate_url_pattern(self, field: StringField) -> None:
        try:
            patterns.parse(field.data or "")
        except patterns.PatternError as exc:
            raise ValidationError(f"{exc} (ERR_THROTTLING_CONFIG_{exc.code})") from None


def config_input(data: dict[str, Any]) -> service.ConfigInput:
    """The edited configuration, checked by the authoring API's own parser (the one set of rules)."""
    body = {
        "name": data.get("name") or None,
        "description": data.get("description") or None,
        "urlPattern": data.get("url_pattern"),
        "methods": list(data.get("methods") or []),
        "maxThroughput": data.get("max_throughput"),
    }
    try:
        return service.parse_body(orjson.dumps(body))
    except AuthoringError as exc:
        raise InvalidConfig(f"{exc.message} ({exc.code})") from None


LifecycleStep = Callable[[AsyncSession, ThrottlingConfig, Principal], Awaitable[None]]


async def _deploy(session: AsyncSession, config: ThrottlingConfig, principal: Principal) -> None:
    check = service.can_deploy(config)
    if check["validationStatus"] != "ok":
        raise Refused("; ".join(str(error["message"]) for error in check["errors"]))
    await service.deploy(session, config, principal)


async def _undeploy(session: AsyncSession, config: ThrottlingConfig, principal: Principal) -> None:
    await service.undeploy(session, config, principal)


class ThrottlingConfigAdmin(CheckedIdentifier, StorableSearch, SluiceView, ModelView, model=ThrottlingConfig):  # type: ignore[call-arg]
    name = "Throttling config"
    name_plural = "Throttling configs"
    icon = "fa-solid fa-gauge-high"
    category = "Throttling"
    # A config belongs to an organisation and a sandbox, which the authoring API takes from the
    # caller's key and headers; it is created and deleted there.
    can_create = False
    can_delete = False
    list_template = "sluice/list.html"
    details_template = "sluice/throttling_details.html"

    column_list: ClassVar[Any] = [
        ThrottlingConfig.name,
        ThrottlingConfig.org_id,
        ThrottlingConfig.sandbox_name,
        ThrottlingConfig.url_pattern,
        ThrottlingConfig.methods,
        ThrottlingConfig.max_throughput,
        ThrottlingConfig.state,
        ThrottlingConfig.runtime_version,
        ThrottlingConfig.last_deployed_at,
        ThrottlingConfig.last_deployed_by,
    ]
    column_details_list: ClassVar[Any] = [
        ThrottlingConfig.uid,
        ThrottlingConfig.name,
        ThrottlingConfig.description,
        ThrottlingConfig.org_id,
        ThrottlingConfig.sandbox_name,
        ThrottlingConfig.sandbox_id,
        ThrottlingConfig.url_pattern,
        ThrottlingConfig.methods,
        ThrottlingConfig.max_throughput,
        ThrottlingConfig.state,
        ThrottlingConfig.has_been_deployed,
        ThrottlingConfig.runtime_version,
        ThrottlingConfig.created_at,
        ThrottlingConfig.created_by,
        ThrottlingConfig.created_by_id,
        ThrottlingConfig.last_modified_at,
        ThrottlingConfig.last_modified_by,
        ThrottlingConfig.last_modified_by_id,
        ThrottlingConfig.last_deployed_at,
        ThrottlingConfig.last_deployed_by,
        ThrottlingConfig.last_deployed_by_id,
    ]
    column_default_sort: ClassVar[Any] = [(ThrottlingConfig.org_id, False)]
    column_sortable_list: ClassVar[Any] = [
        ThrottlingConfig.name,
        ThrottlingConfig.org_id,
        ThrottlingConfig.state,
        ThrottlingConfig.max_throughput,
        ThrottlingConfig.last_deployed_at,
    ]
    column_searchable_list: ClassVar[Any] = [
        ThrottlingConfig.uid,
        ThrottlingConfig.name,
        ThrottlingConfig.org_id,
        ThrottlingConfig.url_pattern,
    ]
    column_filters: ClassVar[Any] = [
        AllUniqueStringValuesFilter(ThrottlingConfig.org_id, title="Organisation"),
        StaticValuesFilter(ThrottlingConfig.state, [(s.value, s.value) for s in ConfigState], title="State"),
    ]
    column_labels: ClassVar[Any] = {
        ThrottlingConfig.uid: "uid",
        ThrottlingConfig.org_id: "Organisation",
        ThrottlingConfig.sandbox_name: "Sandbox",
        ThrottlingConfig.sandbox_id: "Sandbox id",
        ThrottlingConfig.url_pattern: "urlPattern",
        ThrottlingConfig.max_throughput: "maxThroughput",
        ThrottlingConfig.runtime_version: "Runtime version",
        ThrottlingConfig.last_deployed_at: "Last deployed at",
        ThrottlingConfig.last_deployed_by: "Last deployed by",
    }
    column_formatters: ClassVar[Any] = {
        ThrottlingConfig.methods: lambda m, a: _join(m.methods),
        ThrottlingConfig.runtime_version: lambda m, a: m.runtime_version or "",
    }
    column_formatters_detail: ClassVar[Any] = column_formatters
    form_columns: ClassVar[Any] = [
        ThrottlingConfig.name,
        ThrottlingConfig.description,
        ThrottlingConfig.url_pattern,
        ThrottlingConfig.methods,
        ThrottlingConfig.max_throughput,
    ]

    # --------------------------------------------------------------------------- reading

    async def details_context(self, request: Request) -> dict[str, Any]:
        state = self.sluice
        uid = request.path_params["pk"]
        async with state.sessionmaker() as session:
            config = await session.get(ThrottlingConfig, uid)
            rows = (
                await session.scalars(
                    select(ThrottlingRuntime)
                    .where(ThrottlingRuntime.config_uid == uid)
                    .order_by(ThrottlingRuntime.version.desc())
                )
            ).all()
        enforced = sorted(
            rule.version for rules in state.throttle.rules.values() for rule in rules if rule.uid == uid
        )
        return {
            "runtime_rows": list(rows),
            "runtime_status": runtime_status,
            "can_deploy": service.can_deploy(config) if config is not None else {"validationStatus": "ok"},
            "enforced": enforced,
            "instance": state.settings.instance_name,
        }

    # --------------------------------------------------------------------------- changing

    async def _principal(self, request: Request) -> Principal:
        """The admin's API client, the author of the change (as the API records its caller)."""
        digest = request.session.get("key_hash")
        principal = await self.sluice.authenticator.authenticate_digest(str(digest)) if digest else None
        if principal is None or not principal.has("admin"):
            raise HTTPException(403, "The admin session's API key is no longer valid")
        return principal

    async def _announce(self, request: Request) -> None:
        """Tell every replica the deployed rules changed (as the authoring API does)."""
        try:
            await self.sluice.throttle.changed()
        except Exception as exc:
            logger.error(
                "could not announce a throttling change (%r); replicas pick it up on their next full reload",
                exc,
            )
            flash(
                request,
                FlashLevel.warning,
                "The change is saved but could not be announced to the replicas; "
                "they pick it up on their next full reload (within a minute).",
            )

    @staticmethod
    async def _locked(session: AsyncSession, pk: str) -> ThrottlingConfig | None:
        if not _UID.fullmatch(pk):
            return None
        return await session.scalar(
            select(ThrottlingConfig).where(ThrottlingConfig.uid == pk).with_for_update()
        )

    async def scaffold_form(self, rules: list[str] | None = None) -> type[Form]:
        return ConfigEditForm

    async def get_form_data_for_edit(self, obj: Any) -> dict[str, Any]:
        return {
            "name": obj.name,
            "description": obj.description,
            "url_pattern": obj.url_pattern,
            "methods": list(obj.methods or []),
            "max_throughput": obj.max_throughput,
        }

    async def update_model(self, request: Request, pk: str, data: dict[str, Any]) -> Any:
        """Save through service.apply_update; a deployed config's runtime changes at once."""
        principal = await self._principal(request)
        wanted = config_input(data)
        try:
            async with self.sluice.sessionmaker.begin() as session:
                config = await self._locked(session, pk)
                if config is None:
                    raise InvalidConfig("No such throttling config (was it deleted meanwhile?)")
                live = await service.apply_update(session, config, wanted, principal)
        except AuthoringError as exc:
            raise InvalidConfig(f"{exc.message} ({exc.code})") from None
        if live:
            await self._announce(request)
        flash(
            request,
            FlashLevel.success,
            f"Throttling config {config.name or config.uid} saved"
            + ("; the deployed rule changed at once." if live else "."),
        )
        return config

    # --------------------------------------------------------------------------- actions

    async def _lifecycle(self, request: Request, verb: str, step: LifecycleStep) -> Response:
        """Apply `step` to every selected config in one transaction, announce, then go back.

        A config whose state refuses the step is reported and skipped: the service checks before
        it changes anything, so a refused config leaves nothing half-done in the transaction.
        """
        refuse_cross_site(request)
        principal = await self._principal(request)
        raw = list(
            dict.fromkeys(p.strip() for p in request.query_params.get("pks", "").split(",") if p.strip())
        )
        done: list[str] = []
        refused: list[str] = []
        try:
            async with self.sluice.sessionmaker.begin() as session:
                for pk in raw:
                    config = await self._locked(session, pk)
                    if config is None:
                        refused.append(f"{pk}: no such config")
                        continue
                    label = config.name or config.uid
                    try:
                        await step(session, config, principal)
                    except AuthoringError as exc:
                        refused.append(f"{label}: {exc.message}")
                        continue
                    except Refused as exc:
                        refused.append(f"{label}: {exc}")
                        continue
                    done.append(label)
        except SQLAlchemyError:
            logger.exception("throttling admin action %s failed", verb)
            flash(request, FlashLevel.error, f"Nothing was {verb.lower()}: the database refused the change.")
            return RedirectResponse(back_path(request, self.identity), status_code=302)
        if done:
            await self._announce(request)
        if not raw:
            flash(request, FlashLevel.warning, "Select at least one throttling config.")
        if done:
            flash(request, FlashLevel.success, f"{verb}: {', '.join(done)}.")
        flash_refused(request, verb, refused)
        return RedirectResponse(back_path(request, self.identity), status_code=302)

    @action(
        name="deploy",
        label="Deploy",
        confirmation_message="Deploy? Matching partner calls are throttled at once, on every replica.",
    )
    async def deploy_action(self, request: Request) -> Response:
        return await self._lifecycle(request, "Deployed", _deploy)

    @action(
        name="undeploy",
        label="Undeploy",
        confirmation_message="Undeploy? New calls stop being throttled at once; queued ones keep their slots.",
    )
    async def undeploy_action(self, request: Request) -> Response:
        return await self._lifecycle(request, "Undeployed", _undeploy)


# ------------------------------------------------------------------------------ runtime versions


class RuntimeConfigFilter:
    """Runtime versions of one config (rows outlive a force-deleted config, so listed from here)."""

    has_operator = False
    template = "sqladmin/filters/lookup_filter.html"
    title = "Config"
    parameter_name = "config"

    async def lookups(
        self, request: Request, model: Any, run_query: Callable[..., Awaitable[Any]]
    ) -> list[tuple[str, str]]:
        rows = await run_query(
            select(ThrottlingRuntime.config_uid, ThrottlingRuntime.org_id)
            .distinct()
            .order_by(ThrottlingRuntime.org_id, ThrottlingRuntime.config_uid)
        )
        return [("__all", "All"), *((uid, f"{org} ({uid})") for uid, org in rows)]

    async def get_filtered_query(self, query: Select[Any], value: Any, model: Any) -> Select[Any]:
        if value in (None, "", "__all"):
            return query
        return query.where(ThrottlingRuntime.config_uid == str(value))


class ThrottlingRuntimeAdmin(
    CheckedIdentifier, StorableSearch, SluiceView, ModelView, model=ThrottlingRuntime
):  # type: ignore[call-arg]
    name = "Throttling runtime"
    name_plural = "Throttling runtime"
    icon = "fa-solid fa-traffic-light"
    category = "Throttling"
    # Written by deploy / update / undeploy only, deleted by the maintenance loop after the grace.
    can_create = False
    can_edit = False
    can_delete = False
    page_size = 50

    column_list: ClassVar[Any] = [
        ThrottlingRuntime.id,
        ThrottlingRuntime.config_uid,
        ThrottlingRuntime.version,
        ThrottlingRuntime.org_id,
        ThrottlingRuntime.url_pattern,
        ThrottlingRuntime.methods,
        ThrottlingRuntime.max_throughput,
        ThrottlingRuntime.active,
        ThrottlingRuntime.deployed_at,
        ThrottlingRuntime.undeployed_at,
    ]
    column_details_list: ClassVar[Any] = column_list
    column_default_sort: ClassVar[Any] = [(ThrottlingRuntime.deployed_at, True)]
    column_sortable_list: ClassVar[Any] = [
        ThrottlingRuntime.id,
        ThrottlingRuntime.org_id,
        ThrottlingRuntime.version,
        ThrottlingRuntime.active,
        ThrottlingRuntime.deployed_at,
        ThrottlingRuntime.undeployed_at,
    ]
    column_searchable_list: ClassVar[Any] = [
        ThrottlingRuntime.config_uid,
        ThrottlingRuntime.org_id,
        ThrottlingRuntime.url_pattern,
    ]
    column_filters: ClassVar[Any] = [
        AllUniqueStringValuesFilter(ThrottlingRuntime.org_id, title="Organisation"),
        BooleanFilter(ThrottlingRuntime.active, title="Active"),
        RuntimeConfigFilter(),
    ]
    column_labels: ClassVar[Any] = {
        ThrottlingRuntime.config_uid: "Config uid",
        ThrottlingRuntime.org_id: "Organisation",
        ThrottlingRuntime.url_pattern: "urlPattern",
        ThrottlingRuntime.max_throughput: "maxThroughput",
        ThrottlingRuntime.active: "Status",
    }
    column_formatters: ClassVar[Any] = {
        ThrottlingRuntime.methods: lambda m, a: _join(m.methods),
        ThrottlingRuntime.active: lambda m, a: runtime_status(m),
    }
    column_formatters_detail: ClassVar[Any] = column_formatters


# ------------------------------------------------------------------------------ installation


def throttling_views(app: FastAPI) -> list[type[ModelView]]:
    """The throttling views, bound to `app` (see app.admin.common.SluiceView)."""
    return bind_views(app, (ThrottlingConfigAdmin, ThrottlingRuntimeAdmin))


def install_throttling_admin(admin: Admin, app: FastAPI) -> None:
    """Add the throttling templates and views to `admin`."""
    env = admin.templates.env
    env.loader = ChoiceLoader([DictLoader(TEMPLATES), *([env.loader] if env.loader else [])])
    for view in throttling_views(app):
        admin.add_view(view)
