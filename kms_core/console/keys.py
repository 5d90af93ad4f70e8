"""The key pages: the list (with the create dialog) and a key's detail page with its actions.

Each action is one service call; a refusal is the service's own message, shown in the dialog
that made the request. Nothing secret is rendered: no key material, no plaintext, and the
import token only as a download the user asked for.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from kms_core.console.sessions import SignedIn
from kms_core.console.web import PREFIX, Console, in_thread, redirect
from kms_core.errors import InvalidParameter, KmsError, NotFound
from kms_core.service import KmsService
from kms_core.specs import KeySpec, KeyUsage, Origin, Protection
from kms_core.states import KeyState
from kms_core.types import Caller, ImportParameters, KeyMetadata, KeyVersionInfo

ROTATION_PRESETS = ("30", "90", "180")
WRAPPING_ALGORITHMS = ("RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1", "RSAES_PKCS1_V1_5")
LIST_PAGE = 1000


def _all_keys(service: KmsService, caller: Caller) -> list[KeyMetadata]:
    keys: list[KeyMetadata] = []
    marker: str | None = None
    while True:
        page = service.list_keys(caller, limit=LIST_PAGE, marker=marker)
        keys.extend(page.items)
        if page.next_marker is None:
            return keys
        marker = page.next_marker


def _number(value: Any) -> int:
    """A form's number as an int; anything else goes to the service as is, which refuses it
    with its own message (the console keeps no copy of the service's rules)."""
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        return cast(int, text)


def _filtered(keys: list[KeyMetadata], state: str, spec: str, q: str) -> list[KeyMetadata]:
    q = q.strip().lower()
    out = []
    for k in keys:
        if state and k.state != state:
            continue
        if spec and k.spec != spec:
            continue
        if q and q not in k.key_id.lower() and not any(q in a.lower() for a in k.aliases):
            continue
        out.append(k)
    out.sort(key=lambda k: k.created_at, reverse=True)
    return out


async def key_list(console: Console, request: Request, session: SignedIn, form: dict[str, Any]) -> Response:
    service, caller = console.kms.service, console.caller(session)
    error, status, values, error_code = None, 200, {}, None
    if request.method == "POST":
        values = {k: str(v) for k, v in form.items() if isinstance(v, str) and k != "csrf"}
        try:
            made = await in_thread(_create, service, caller, values)
        except (KmsError, _FormError) as e:
            error, status, error_code = e.message, 400, getattr(e, "code", None)
        else:
            return redirect(f"{PREFIX}/keys/{made.key_id}?done=created")
    params = request.query_params
    state, spec, q = params.get("state", ""), params.get("type", ""), params.get("q", "")
    keys = await in_thread(_all_keys, service, caller)
    return console.page(
        request, "keys.html", status, session, keys=_filtered(keys, state, spec, q), total=len(keys),
        state=state, spec=spec, q=q, states=[s.value for s in KeyState], specs=[s.value for s in KeySpec],
        open_dialog="create" if error or params.get("dialog") == "create" else None,
        error=error, error_code=error_code, values=values, done=params.get("done"), **_create_choices(),
    )


def _create_choices() -> dict[str, Any]:
    return {
        "spec_choices": [s.value for s in KeySpec],
        "usage_choices": [u.value for u in KeyUsage],
        "protection_choices": [p.value for p in Protection],
        "rotation_presets": ROTATION_PRESETS,
    }


class _FormError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _create(service: KmsService, caller: Caller, v: dict[str, str]) -> KeyMetadata:
    rotation = v.get("rotation", "off")
    period: int | None = None
    if rotation == "custom":
        period = _number(v.get("rotation_days", ""))
    elif rotation != "off":
        period = _number(rotation)
    origin = v.get("origin", Origin.KMS.value)
    if origin == Origin.EXTERNAL.value and v.get("external_ack") != "on":
        raise _FormError("Tick “I understand how external key material is used and what it means” "
                         "to use external key material.")
    return service.create_key(
        caller, spec=v.get("spec", "AES_256"), usage=v.get("usage", "ENCRYPT_DECRYPT"),
        protection=v.get("protection") or None, origin=origin, description=v.get("description", ""),
        alias=v.get("alias", "").strip() or None, enterprise_project=v.get("enterprise_project", "").strip()
        or "default", rotation_period_days=period,
    )


# ------------------------------------------------------------------------- detail


def _detail_data(service: KmsService, caller: Caller, key_id: str) -> dict[str, Any]:
    meta = service.describe_key(caller, key_id)
    versions: list[KeyVersionInfo] = []
    if meta.state != KeyState.PENDING_IMPORT.value or meta.primary_version_id:
        versions = service.list_key_versions(caller, meta.key_id, limit=100).items
    others = [k for k in _all_keys(service, caller) if k.key_id != meta.key_id and not k.default_product]
    return {"key": meta, "versions": versions, "other_keys": others,
            "symmetric": KeySpec(meta.spec).symmetric, "external": meta.origin == Origin.EXTERNAL.value}


async def key_detail(console: Console, request: Request, session: SignedIn, form: dict[str, Any],
                     **extra: Any) -> Response:
    service, caller = console.kms.service, console.caller(session)
    try:
        data = await in_thread(_detail_data, service, caller, request.path_params["key_id"])
    except (NotFound, InvalidParameter):
        # Another tenant's key, a destroyed one or a malformed id: the same 404, ids do not leak.
        return console.not_found(request, session)
    status = extra.pop("status", 200)
    extra.setdefault("values", {})
    done = request.query_params.get("done")
    return console.page(
        request, "key.html", status, session, **data, done=done,
        open_dialog=extra.pop("open_dialog", request.query_params.get("dialog")),
        rotation_presets=ROTATION_PRESETS, wrapping_algorithms=WRAPPING_ALGORITHMS, **extra,
    )


def _file_bytes(value: Any) -> bytes:
    """An uploaded file's content, base64-decoded when it is base64 text (the guide's
    `..._base64.txt` files), else as uploaded."""
    raw = value if isinstance(value, bytes) else b""
    text = raw.strip()
    try:
        return base64.b64decode(text, validate=True) if text else b""
    except (binascii.Error, ValueError):
        return raw


def _expiry(value: str) -> datetime | None:
    value = value.strip()
    if not value:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise _FormError(f"not a date and time: {value!r}") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


async def key_action(console: Console, request: Request, session: SignedIn, form: dict[str, Any]) -> Response:
    service, caller = console.kms.service, console.caller(session)
    key_id, action = request.path_params["key_id"], request.path_params["action"]
    text = {k: v for k, v in form.items() if isinstance(v, str)}
    files: dict[str, bytes] = {}
    for name in ("material", "token"):
        upload = form.get(name)
        if upload is not None and hasattr(upload, "read"):
            files[name] = _file_bytes(await upload.read())

    def run() -> Any:
        return _run_action(service, caller, key_id, action, text, files)

    try:
        result = await in_thread(run)
    except NotFound as e:
        if action.startswith("alias") and "alias" in e.message:
            return await key_detail(console, request, session, form, status=400, error=e.message,
                                    error_code=e.code, open_dialog=action, values=text)
        return console.not_found(request, session)
    except (KmsError, _FormError) as e:
        # The dialog again, with what was typed and the service's reason.
        return await key_detail(console, request, session, form, status=400, error=e.message,
                                error_code=getattr(e, "code", None), open_dialog=action, values=text)
    if isinstance(result, ImportParameters):
        return await key_detail(console, request, session, form, open_dialog="import-parameters",
                                import_params=_import_downloads(result))
    back = text.get("next")
    if back == "list":
        return redirect(f"{PREFIX}/keys?done={quote(action)}")
    return redirect(f"{PREFIX}/keys/{quote(key_id)}?done={quote(action)}")


def _run_action(service: KmsService, caller: Caller, key_id: str, action: str, text: dict[str, str],
                files: dict[str, bytes]) -> Any:
    """One key action of the detail page's dialogs, as the service call it is."""
    key = service.describe_key(caller, key_id).key_id  # NotFound for others' keys
    match action:
        case "enable":
            return service.enable_key(caller, key)
        case "disable":
            return service.disable_key(caller, key)
        case "schedule-deletion":
            return service.schedule_key_deletion(caller, key, _number(text.get("pending_days", "")))
        case "cancel-deletion":
            return service.cancel_key_deletion(caller, key)
        case "description":
            return service.update_key_description(caller, key, text.get("description", ""))
        case "alias-add":
            return service.create_alias(caller, text.get("alias", "").strip(), key)
        case "alias-delete":
            return service.delete_alias(caller, text.get("alias", ""))
        case "alias-rebind":
            return service.update_alias(caller, text.get("alias", ""), text.get("target", "").strip())
        case "rotation":
            choice = text.get("period", "off")
            if choice == "off":
                return service.disable_key_rotation(caller, key)
            days = _number(text.get("rotation_days", "") if choice == "custom" else choice)
            return service.enable_key_rotation(caller, key, days)
        case "rotate-now":
            return service.rotate_key_on_demand(caller, key)
        case "create-version":
            return service.create_key_version(caller, key)
        case "import-parameters":
            return service.get_parameters_for_import(
                caller, key, text.get("wrapping_algorithm", "RSAES_OAEP_SHA_256"),
                text.get("wrapping_key_spec", "RSA_2048"))
        case "import-material":
            return service.import_key_material(
                caller, key, files.get("material", b""), files.get("token", b""),
                expires_at=_expiry(text.get("expires_at", "")))
        case "delete-material":
            return service.delete_key_material(caller, key)
    raise NotFound(f"no action {action!r}")


def _import_downloads(p: ImportParameters) -> dict[str, str]:
    """The wrapping public key and the token as base64 text files, as the guide's OpenSSL steps
    expect them (`PublicKey_base64.txt`); offered as downloads, not shown."""
    public_b64 = base64.b64encode(p.public_key)
    token_b64 = base64.b64encode(p.import_token)
    return {
        "public_key_href": "data:text/plain;base64," + base64.b64encode(public_b64).decode(),
        "token_href": "data:text/plain;base64," + base64.b64encode(token_b64).decode(),
        "valid_to": p.valid_to.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "algorithm": p.wrapping_algorithm,
        "key_spec": p.wrapping_key_spec,
    }


async def public_key(console: Console, request: Request, session: SignedIn, form: dict[str, Any]) -> Response:
    service, caller = console.kms.service, console.caller(session)
    try:
        result = await in_thread(service.get_public_key, caller, request.path_params["key_id"],
                                 request.path_params["version_id"])
    except KmsError:
        return console.not_found(request, session)
    name = f"PublicKey_{result.key_id}_{result.version_id}.pem"
    return Response(result.public_key_pem, media_type="application/x-pem-file",
                    headers={"content-disposition": f'attachment; filename="{name}"'})
