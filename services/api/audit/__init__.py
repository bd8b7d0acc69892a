"""The audit log: who changed what, when and from where, written in the change's transaction."""

from services.api.audit.service import record, record_sign_in

__all__ = ["record", "record_sign_in"]
