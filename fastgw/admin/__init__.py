"""The admin API: create, list, change and revoke virtual keys at run time (docs/admin-api.md)."""

from __future__ import annotations

from .api import AdminAPI, check_admin_token, openapi_document

__all__ = ["AdminAPI", "check_admin_token", "openapi_document"]
