"""Users, passwords, tokens, sessions and roles of the web app.

- Passwords are stored as ``scrypt$N$r$p$salt$hash`` (hashlib.scrypt, 16 random salt bytes);
  the parameters travel with the hash, so raising them later keeps old hashes verifiable.
- API tokens and session tokens are 256-bit random strings; only their sha256 is stored
  (a random 256-bit secret needs no slow hash: there is nothing to brute-force).
- Roles are ranked annotator < reviewer < admin; a route asks for a minimum role.
- CSRF: a session carries its own random CSRF token; every state-changing request made with
  the session cookie must echo it (``X-CSRF-Token`` header or ``csrf_token`` form field).
  Requests authenticated by an ``Authorization: Bearer`` header are not exposed to CSRF
  (a browser never adds that header by itself) and need no echo.

Everything here takes a :class:`labelloop.store.Store`; functions that write are called by the
server's single writer thread, or by the ``labelloop users`` command.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from ..errors import AuthError, ValidationError
from ..store import Store

__all__ = [
    "ROLES",
    "User",
    "ForbiddenError",
    "TooManyAttemptsError",
    "hash_password",
    "verify_password",
    "generate_password",
    "new_token",
    "token_hash",
    "add_user",
    "get_user",
    "list_users",
    "set_password",
    "issue_token",
    "set_active",
    "authenticate_password",
    "user_for_token",
    "create_session",
    "delete_session",
    "has_role",
]

ROLES = ("admin", "reviewer", "annotator")
_RANK = {"annotator": 0, "reviewer": 1, "admin": 2}

# scrypt cost: OWASP Password Storage Cheat Sheet minimum N=2^17, r=8, p=1 (128 MiB, ~0.3 s
# here). Module-level so tests can lower it; stored hashes carry their own parameters.
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_DKLEN = 32

SESSION_TTL = 7 * 24 * 3600.0  # seconds a login stays valid
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class ForbiddenError(AuthError):
    """Logged in, but the role does not allow this."""

    kind = "forbidden"
    http_status = 403


class TooManyAttemptsError(AuthError):
    kind = "too_many_attempts"
    http_status = 429


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    active: bool = True

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "role": self.role, "active": self.active}


def has_role(user: User, minimum: str) -> bool:
    """True if ``user``'s role is at least ``minimum`` (annotator < reviewer < admin)."""
    return _RANK[user.role] >= _RANK[minimum]


# ----------------------------------------------------------------------------- secrets
def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # scrypt needs 128 * r * N bytes; allow twice that
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen,
                          maxmem=256 * r * n + 2**20)


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt_hex$hash_hex`` with a fresh random salt."""
    if not isinstance(password, str) or len(password) < 8:
        raise ValidationError("a password must have at least 8 characters")
    salt = secrets.token_bytes(16)
    dk = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${dk.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    """Constant-time check of ``password`` against a :func:`hash_password` string."""
    if not stored or not isinstance(password, str):
        return False
    try:
        scheme, n, r, p, salt, dk = stored.split("$")
        if scheme != "scrypt":
            return False
        want = bytes.fromhex(dk)
        got = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p), len(want))
    except ValueError:  # malformed stored hash: never matches
        return False
    return hmac.compare_digest(got, want)


def generate_password() -> str:
    """A random password of 16 URL-safe characters (96 bits)."""
    return secrets.token_urlsafe(12)


def new_token() -> str:
    """A random 256-bit token, URL-safe."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------- users
def _user(row) -> User:
    return User(row["id"], row["name"], row["role"], bool(row["active"]))


def validate_user_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name.strip()):
        raise ValidationError(
            f"user name {name!r} must be 1-64 characters of letters, digits and . _ @ -, "
            "starting with a letter or digit")
    return name.strip()


def validate_role(role: str) -> str:
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return role


def get_user(store: Store, name: str) -> User | None:
    row = store.user(name)
    return _user(row) if row else None


def list_users(store: Store) -> list[User]:
    return [_user(r) for r in store.users()]


def add_user(store: Store, name: str, role: str, *, password: str | None = None,
             token: bool = False) -> tuple[User, dict[str, str]]:
    """Create a user with a password (generated when not given) or, with ``token``, an API
    token instead. Returns the user and the secrets to show once: ``{"password": ...}`` or
    ``{"token": ...}``."""
    name = validate_user_name(name)
    role = validate_role(role)
    if get_user(store, name) is not None:
        raise ValidationError(f"user {name!r} already exists; choose another name or reset it "
                              f"with `labelloop users passwd {name}`")
    shown: dict[str, str] = {}
    pw_hash = tok_hash = None
    if token:
        tok = new_token()
        tok_hash = token_hash(tok)
        shown["token"] = tok
    else:
        pw = password if password is not None else generate_password()
        pw_hash = hash_password(pw)
        if password is None:
            shown["password"] = pw
    store.add_user(name, role, password_hash=pw_hash, token_hash=tok_hash)
    return _require(store, name), shown


def _require(store: Store, name: str) -> User:
    user = get_user(store, name)
    if user is None:
        known = ", ".join(u.name for u in list_users(store)) or "(none)"
        raise ValidationError(f"no user {name!r}; users: {known}")
    return user


def set_password(store: Store, name: str, password: str | None = None) -> str | None:
    """Set a new password (generated when not given; returned then) and end the user's sessions."""
    user = _require(store, name)
    pw = password if password is not None else generate_password()
    h = hash_password(pw)
    store.set_user_password(user.id, h)
    return pw if password is None else None


def issue_token(store: Store, name: str) -> str:
    """A new API token for ``name``; the previous token stops working."""
    user = _require(store, name)
    tok = new_token()
    store.set_user_token(user.id, token_hash(tok))
    return tok


def set_active(store: Store, name: str, active: bool) -> User:
    """(De)activate a user; deactivating ends their sessions and disables their token."""
    user = _require(store, name)
    store.set_user_active(user.id, active)
    return _require(store, name)


def authenticate_password(store: Store, name: str, password: str) -> User | None:
    row = store.user(name, active_only=True)
    if row is None:
        # same work as a real check, so response time does not reveal which names exist
        verify_password(password, _dummy_hash())
        return None
    return _user(row) if verify_password(password, row["password_hash"]) else None


def user_for_token(store: Store, token: str) -> tuple[User, str | None] | None:
    """The active user of a session token (with the session's CSRF token) or of an API token
    (CSRF None: bearer requests need no echo); None if the token is unknown or expired."""
    if not token or len(token) > 200:
        return None
    h = token_hash(token)
    row = store.session_user(h)
    if row is not None:
        return _user(row), row["csrf"]
    row = store.token_user(h)
    if row is not None:
        return _user(row), None
    return None


def create_session(store: Store, user: User, *, ttl: float = SESSION_TTL) -> tuple[str, str]:
    """A new session for ``user``: (session token, CSRF token). Expired sessions are purged."""
    tok, csrf = new_token(), new_token()
    store.add_session(token_hash(tok), user.id, csrf, ttl)
    return tok, csrf


def delete_session(store: Store, token: str) -> None:
    store.delete_session(token_hash(token))


def _dummy_hash() -> str:
    """A valid hash at today's cost whose password nobody knows (checked for unknown names)."""
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${'00' * 16}${'00' * SCRYPT_DKLEN}"
