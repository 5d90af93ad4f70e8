"""Aliases: a name per account and region for a key. Default keys' aliases never change."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from kms_core.errors import AlreadyExists, InvalidMarker, NotFound, UnsupportedOperation
from kms_core.models import Alias
from kms_core.ops.checks import check_limit, refuse_default
from kms_core.repository import RESERVED_ALIASES, KeyRepository, normalize_alias
from kms_core.types import AliasInfo, Caller, Page


def to_alias(row: Alias) -> AliasInfo:
    return AliasInfo(row.name, row.key_id, row.created_at, row.updated_at)


class AliasOps:
    def __init__(self, keys: KeyRepository) -> None:
        self._keys = keys

    def create(self, caller: Caller, alias: str, ref: str) -> AliasInfo:
        name = normalize_alias(alias)
        if name in RESERVED_ALIASES:
            raise UnsupportedOperation(f"alias {name!r} is reserved for a default key")
        with self._keys.session() as s:
            key = self._keys.find_key(s, caller, ref)
            refuse_default(key, "have aliases added")
            row = self._keys.new_alias_row(caller, name, key.id, self._keys.clock())
            s.add(row)
            try:
                s.commit()
            except IntegrityError:
                raise AlreadyExists(f"alias {name!r} already exists") from None
            self._keys.invalidate()
            return to_alias(row)

    @staticmethod
    def _alias_row(s: Session, caller: Caller, alias: str) -> Alias:
        name = normalize_alias(alias)
        row = s.exec(
            select(Alias).where(
                Alias.account_id == caller.account_id,
                Alias.region == caller.region,
                Alias.name == name,
            )
        ).first()
        if row is None:
            raise NotFound(f"alias {name!r} does not exist")
        if name in RESERVED_ALIASES:
            raise UnsupportedOperation(f"alias {name!r} belongs to a default key and cannot change")
        return row

    def update(self, caller: Caller, alias: str, ref: str) -> AliasInfo:
        with self._keys.session() as s:
            row = self._alias_row(s, caller, alias)
            key = self._keys.find_key(s, caller, ref)
            refuse_default(key, "have aliases added")
            row.key_id = key.id
            row.updated_at = self._keys.clock()
            s.add(row)
            s.commit()
            self._keys.invalidate()
            return to_alias(row)

    def delete(self, caller: Caller, alias: str) -> None:
        with self._keys.session() as s:
            row = self._alias_row(s, caller, alias)
            s.delete(row)
            s.commit()
            self._keys.invalidate()

    def page(self, caller: Caller, limit: int, marker: str | None) -> Page[AliasInfo]:
        limit = check_limit(limit)
        with self._keys.session() as s:
            q = select(Alias).where(
                Alias.account_id == caller.account_id, Alias.region == caller.region
            )
            if marker:
                # The marker is the last alias of the page before: it must be one of this
                # account's (an invented marker would silently answer an empty or shifted page).
                if s.exec(q.where(col(Alias.name) == marker)).first() is None:
                    raise InvalidMarker(f"the marker {marker!r} was not handed out by ListAliases")
                q = q.where(col(Alias.name) > marker)
            rows = s.exec(q.order_by(col(Alias.name)).limit(limit + 1)).all()
        page = [to_alias(r) for r in rows[:limit]]
        return Page(page, page[-1].name if len(rows) > limit else None)

    def by_key(self, caller: Caller, ref: str) -> list[AliasInfo]:
        with self._keys.session() as s:
            key = self._keys.find_key(s, caller, ref)
            rows = s.exec(
                select(Alias).where(Alias.key_id == key.id).order_by(col(Alias.name))
            ).all()
        return [to_alias(r) for r in rows]
