from __future__ import annotations

from typing import Any, ClassVar

from sqladmin import ModelView

from app.admin.common import CheckedIdentifier, StorableSearch
from app.clients.models import ApiClient
from app.commlog.models import CommLog
from app.directory.models import DirectoryService


class ApiClientAdmin(CheckedIdentifier, StorableSearch, ModelView, model=ApiClient):  # type: ignore[call-arg]
    name = "API client"
    name_plural = "API clients"
    icon = "fa-solid fa-key"
    # Keys are created with the CLI, which shows the key once; here they are listed and revoked.
    can_create = False
    can_delete = False
    column_list: ClassVar[Any] = [
        ApiClient.name,
        ApiClient.org_id,
        ApiClient.scopes,
        ApiClient.key_prefix,
        ApiClient.is_active,
        ApiClient.created_at,
        ApiClient.last_used_at,
        ApiClient.revoked_at,
    ]
    column_details_exclude_list: ClassVar[Any] = [ApiClient.key_hash]
    column_searchable_list: ClassVar[Any] = [ApiClient.name, ApiClient.org_id, ApiClient.key_prefix]
    column_sortable_list: ClassVar[Any] = [ApiClient.name, ApiClient.created_at, ApiClient.last_used_at]
    form_columns: ClassVar[Any] = [ApiClient.name, ApiClient.is_active]


class CommLogAdmin(CheckedIdentifier, StorableSearch, ModelView, model=CommLog):  # type: ignore[call-arg]
    name = "Communication log"
    name_plural = "Communication log"
    icon = "fa-solid fa-list"
    can_create = False
    can_edit = False
    can_delete = False
    column_default_sort: ClassVar[Any] = [(CommLog.id, True)]
    column_list: ClassVar[Any] = [
        CommLog.id,
        CommLog.created_at,
        CommLog.client_id,
        CommLog.method,
        CommLog.path,
        CommLog.status,
        CommLog.error_code,
        CommLog.upstream_status,
        CommLog.duration_ms,
    ]
    column_searchable_list: ClassVar[Any] = [CommLog.request_id, CommLog.client_id, CommLog.path]
    column_sortable_list: ClassVar[Any] = [CommLog.id, CommLog.status, CommLog.duration_ms]
    page_size = 50


class DirectoryServiceAdmin(CheckedIdentifier, StorableSearch, ModelView, model=DirectoryService):  # type: ignore[call-arg]
    """The service directory with each service's health (read-only here: the API registers and
    changes services, so that credentials are always encrypted on the way in)."""

    name = "Directory service"
    name_plural = "Service directory"
    icon = "fa-solid fa-address-book"
    can_create = False
    can_edit = False
    can_delete = False
    can_export = False
    column_list: ClassVar[Any] = [
        DirectoryService.name,
        DirectoryService.stage,
        DirectoryService.base_url,
        DirectoryService.tags,
        DirectoryService.health_status,
        DirectoryService.last_seen_at,
        DirectoryService.last_checked_at,
    ]
    column_details_exclude_list: ClassVar[Any] = [DirectoryService.credentials_encrypted]
    column_searchable_list: ClassVar[Any] = [DirectoryService.name, DirectoryService.base_url]
    column_sortable_list: ClassVar[Any] = [
        DirectoryService.name,
        DirectoryService.health_status,
        DirectoryService.last_seen_at,
    ]
    column_formatters: ClassVar[Any] = {DirectoryService.tags: lambda m, a: ", ".join(m.tags or [])}
