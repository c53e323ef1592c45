"""Admin views of orders (list, search, create, edit with lines, delete), their collisions with
the resolve actions, and the sync status.

Every change goes through app.orders.service (and app.orders.sync for resolutions), as the API
does: a new version, a place in the change feed, the sync state that makes the loop push it.
Deleting keeps a tombstone (also for a bulk delete from the list), so deletes reach the peer.
"""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from jinja2 import ChoiceLoader, DictLoader
from pydantic import ValidationError
from sqladmin import Admin, BaseView, ModelView, action, expose
from sqladmin.filters import BooleanFilter, StaticValuesFilter
from sqladmin.flash import FlashLevel
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from wtforms import Form, HiddenField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from app.admin.common import (
    CheckedIdentifier,
    RefusedInput,
    SluiceView,
    StorableSearch,
    bind_views,
    flash,
    refuse_cross_site,
)
from app.errors import SluiceError
from app.orders import service, sync
from app.orders.models import Order, OrderStatus
from app.orders.schemas import OrderIn, ResolveIn
from app.orders.sync_states import SyncState

if TYPE_CHECKING:
    from fastapi import FastAPI


logger = logging.getLogger("sluice.orders")

SYNC_STATUS_TEMPLATE = """\
{% extends "sqladmin/layout.html" %}
{% block content %}
<div class="col-12">
  <div class="card">
    <div class="card-header"><h3 class="card-title">Order sync</h3></div>
    <div class="card-body">
      {% if not status.enabled %}<p id="sync-disabled">No peer configured (SYNC_PEER_URL).</p>{% endif %}
      <table class="table table-sm" id="sync-status">
        {% for key in ["instance", "peer_url", "cursor", "pending_push", "last_run_at", "last_success_at",
                       "last_error", "last_error_at", "pulled_total", "pushed_total"] %}
        <tr><th>{{ key }}</th><td id="sync-{{ key }}">{{ status[key] if status[key] is not none else "" }}</td></tr>
        {% endfor %}
      </table>
      <h4>Lag</h4>
      <table class="table table-sm" id="sync-lag">
        {% for key, value in status.lag.items() %}<tr><th>{{ key }}</th><td id="sync-lag-{{ key }}">{{ value if value is not none else "" }}</td></tr>{% endfor %}
      </table>
      <h4>Orders per sync state</h4>
      <table class="table table-sm" id="sync-counts">
        {% for name, count in status.counts.items() %}<tr><th>{{ name }}</th><td>{{ count }}</td></tr>{% endfor %}
      </table>
      {% if status.enabled %}
      <form method="post"><button class="btn btn-primary" id="sync-now" type="submit">Sync now</button></form>
      {% endif %}
      {% if result %}<p class="mt-2" id="sync-result">{{ result }}</p>{% endif %}
    </div>
  </div>
</div>
{% endblock %}
"""

LINES_HELP = "One line per row: sku; name; quantity; unit price (e.g. PLN20; Prepaid 20; 2; 10.25)"


class OrderForm(Form):
    version = HiddenField()
    number = StringField("Number", [Optional(), Length(max=64)], description="Empty: derived from the id")
    customer_name = StringField("Customer name", [DataRequired(), Length(max=200)])
    customer_email = StringField("Customer e-mail", [DataRequired(), Length(max=320)])
    currency = StringField("Currency", [DataRequired(), Length(min=3, max=3)], default="EUR")
    status = SelectField("Status", choices=[(s.value, s.value) for s in OrderStatus], default="new")
    lines = TextAreaField("Lines", [DataRequired()], description=LINES_HELP, render_kw={"rows": 6})
    notes = TextAreaField("Notes", [Optional(), Length(max=10_000)], render_kw={"rows": 3})


def parse_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        parts = [p.strip() for p in raw.split(";")]
        if len(parts) != 4:
            raise RefusedInput(f"Line {number}: expected 'sku; name; quantity; unit price', got {raw!r}")
        sku, name, quantity, price = parts
        try:
            lines.append(
                {"sku": sku, "name": name, "quantity": int(quantity), "unit_price": str(Decimal(price))}
            )
        except (ValueError, InvalidOperation):
            raise RefusedInput(
                f"Line {number}: quantity must be a whole number and the price a number"
            ) from None
    return lines


def format_lines(lines: list[dict[str, Any]]) -> str:
    return "\n".join(f"{x['sku']}; {x['name']}; {x['quantity']}; {x['unit_price']}" for x in lines)


def order_input(data: dict[str, Any], order_id: uuid.UUID | None = None) -> OrderIn:
    try:
        return OrderIn.model_validate(
            {
                "id": order_id,
                "number": (data.get("number") or "").strip() or None,
                "customer": {"name": data.get("customer_name"), "email": data.get("customer_email")},
                "lines": parse_lines(data.get("lines") or ""),
                "currency": data.get("currency"),
                "status": data.get("status") or "new",
                "notes": data.get("notes") or "",
            }
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise RefusedInput(f"The order is not valid: {problems}") from None


def _uuid(pk: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(pk))
    except ValueError:
        return None


class OrderAdmin(CheckedIdentifier, StorableSearch, SluiceView, ModelView, model=Order):  # type: ignore[call-arg]
    name = "Order"
    name_plural = "Orders"
    icon = "fa-solid fa-cart-shopping"
    category = "Orders"
    can_export = False
    list_template = "sluice/list.html"

    column_list: ClassVar[Any] = [
        Order.number,
        Order.customer_name,
        Order.customer_email,
        Order.currency,
        Order.total,
        Order.status,
        Order.version,
        Order.sync_state,
        Order.deleted,
        Order.updated_at,
    ]
    column_details_list: ClassVar[Any] = [
        Order.id,
        Order.number,
        Order.customer_name,
        Order.customer_email,
        Order.lines,
        Order.currency,
        Order.total,
        Order.status,
        Order.notes,
        Order.version,
        Order.origin,
        Order.changed_by,
        Order.deleted,
        Order.sync_state,
        Order.peer_version,
        Order.remote_copy,
        Order.sync_error,
        Order.synced_at,
        Order.change_seq,
        Order.created_at,
        Order.updated_at,
    ]
    column_searchable_list: ClassVar[Any] = [Order.number, Order.customer_name, Order.customer_email]
    column_sortable_list: ClassVar[Any] = [Order.number, Order.updated_at, Order.total, Order.status]
    column_default_sort: ClassVar[Any] = [(Order.updated_at, True)]
    column_filters: ClassVar[Any] = [
        StaticValuesFilter(Order.status, [(s.value, s.value) for s in OrderStatus], title="Status"),
        StaticValuesFilter(Order.sync_state, [(str(s.value), s.name) for s in SyncState], title="Sync state"),
        BooleanFilter(Order.deleted, title="Deleted"),
    ]
    column_labels: ClassVar[Any] = {Order.customer_name: "Customer", Order.customer_email: "E-mail"}
    column_formatters: ClassVar[Any] = {
        Order.sync_state: lambda m, a: SyncState(m.sync_state).name,
        Order.total: lambda m, a: f"{m.total:.2f}",
    }
    column_formatters_detail: ClassVar[Any] = {
        Order.sync_state: lambda m, a: SyncState(m.sync_state).name,
        Order.lines: lambda m, a: format_lines(m.lines),
    }

    async def scaffold_form(self, rules: list[str] | None = None) -> type[Form]:
        return OrderForm

    async def get_form_data_for_edit(self, obj: Any) -> dict[str, Any]:
        return {
            "version": str(obj.version),
            "number": obj.number,
            "customer_name": obj.customer_name,
            "customer_email": obj.customer_email,
            "currency": obj.currency,
            "status": obj.status,
            "lines": format_lines(obj.lines),
            "notes": obj.notes,
        }

    async def insert_model(self, request: Request, data: dict[str, Any]) -> Any:
        wanted = order_input(data)
        async with self.sluice.sessionmaker() as session:
            try:
                order, _ = await service.create(session, wanted, instance=self.sluice.settings.instance_name)
            except SluiceError as exc:
                raise RefusedInput(exc.detail or exc.title) from None
        flash(request, FlashLevel.success, f"Order {order.number} created; it syncs with the next round.")
        return order

    async def update_model(self, request: Request, pk: str, data: dict[str, Any]) -> Any:
        order_id = _uuid(pk)
        if order_id is None:
            raise RefusedInput("No such order")
        wanted = order_input(data, order_id)
        # The version the form was opened on: a change made meanwhile (here or by the sync) is
        # refused rather than overwritten.
        version = (data.get("version") or "").strip()
        async with self.sluice.sessionmaker() as session:
            try:
                order = await service.update(
                    session,
                    order_id,
                    wanted,
                    if_match=f'"{version}"' if version else "*",
                    instance=self.sluice.settings.instance_name,
                )
            except SluiceError as exc:
                raise RefusedInput(exc.detail or exc.title) from None
        flash(request, FlashLevel.success, f"Order {order.number} saved (version {order.version}).")
        return order

    async def delete_model(self, request: Request, pk: Any) -> None:
        """A tombstone, not a row delete: the peer must learn of it."""
        order_id = _uuid(pk)
        if order_id is None:
            return
        async with self.sluice.sessionmaker() as session:
            try:
                await service.delete(
                    session, order_id, if_match=None, instance=self.sluice.settings.instance_name
                )
            except SluiceError as exc:
                # A delete the service refuses (already deleted, in collision) is reported, not
                # turned into an error page for the whole selection.
                flash(request, FlashLevel.warning, f"Order {order_id} not deleted: {exc.detail or exc.title}")

    async def _resolve(self, request: Request, take: Literal["local", "remote"]) -> Response:
        refuse_cross_site(request)
        pks = [p for p in request.query_params.get("pks", "").split(",") if p.strip()]
        done, refused = [], []
        for pk in pks:
            order_id = _uuid(pk)
            if order_id is None:
                refused.append(f"{pk}: no such order")
                continue
            async with self.sluice.sessionmaker() as session:
                try:
                    order = await sync.resolve(
                        session, order_id, ResolveIn(take=take), instance=self.sluice.settings.instance_name
                    )
                    done.append(order.number)
                except SluiceError as exc:
                    refused.append(f"{pk}: {exc.detail or exc.title}")
        if done:
            flash(
                request,
                FlashLevel.success,
                f"Resolved ({take}): {', '.join(done)}; the peer gets it next round.",
            )
        if refused:
            flash(request, FlashLevel.error, "Not resolved: " + "; ".join(refused[:10]))
        if not pks:
            flash(request, FlashLevel.warning, "Select at least one order.")
        return RedirectResponse(str(request.url_for("admin:list", identity=self.identity)), status_code=302)

    @action(
        name="keep-local",
        label="Resolve: keep this instance's copy",
        confirmation_message="Keep this instance's copy?",
    )
    async def keep_local(self, request: Request) -> Response:
        return await self._resolve(request, "local")

    @action(
        name="take-remote",
        label="Resolve: take the peer's copy",
        confirmation_message="Take the peer's copy?",
    )
    async def take_remote(self, request: Request) -> Response:
        return await self._resolve(request, "remote")


class SyncStatusAdmin(SluiceView, BaseView):
    name = "Sync status"
    icon = "fa-solid fa-arrows-rotate"
    category = "Orders"

    @expose("/sync-status", methods=["GET", "POST"], identity="sync-status")
    async def page(self, request: Request) -> Response:
        result = ""
        syncer = self.sluice.order_sync
        if request.method == "POST":
            refuse_cross_site(request)
            if syncer.enabled:
                try:
                    done = await syncer.run_once()
                    result = f"Round done: {done.pulled} pulled, {done.pushed} pushed, {done.failed} refused."
                except sync.PeerError as exc:
                    result = f"The peer failed: {exc}"
        status = await syncer.status()
        return await self.templates.TemplateResponse(
            request, "sluice/sync_status.html", {"status": status, "result": result}
        )


def orders_views(app: FastAPI) -> list[type[Any]]:
    return bind_views(app, (OrderAdmin, SyncStatusAdmin))


def install_orders_admin(admin: Admin, app: FastAPI) -> None:
    env = admin.templates.env
    env.loader = ChoiceLoader(
        [DictLoader({"sluice/sync_status.html": SYNC_STATUS_TEMPLATE}), *([env.loader] if env.loader else [])]
    )
    for view in orders_views(app):
        admin.add_view(view)
