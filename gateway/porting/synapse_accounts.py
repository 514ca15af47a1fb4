"""import-synapse, accounts: users (bcrypt hashes kept as they are; locked, suspended and
shadow-banned stay so), devices and their
access tokens (stored hashed, as ours are: clients stay logged in), profiles, filters, SSO
links (``user_external_ids``), 3PIDs, the IdP sessions of devices, rate-limit overrides and
the clients' last addresses."""

from __future__ import annotations

from ..storage.devices import token_hash
from .synapse_import import ImportContext, insert_rows, json_text
from .synapse_source import column_exists


async def import_accounts(ctx: ImportContext) -> None:
    await _users(ctx)
    await _profiles(ctx)
    await _devices(ctx)
    src = ctx.source
    await insert_rows(ctx, "user_external_ids", ("auth_provider", "external_id", "user_id"), await src.fetch(
        "SELECT auth_provider, external_id, user_id FROM user_external_ids"), what="SSO links")
    await insert_rows(ctx, "user_threepids", ("user_id", "medium", "address", "validated_at", "added_at"),
                      await src.fetch("SELECT user_id, medium, address, validated_at, added_at FROM user_threepids"),
                      what="3PIDs")
    await insert_rows(ctx, "ratelimit_override", ("user_id", "messages_per_second", "burst_count"), [
        (r[0], r[1] or 0, r[2] or 0) for r in await src.fetch(
            "SELECT user_id, messages_per_second, burst_count FROM ratelimit_override")], what="rate-limit overrides")
    filters = await src.fetch("SELECT user_id, filter_id, filter_json FROM user_filters")  # user_id: the localpart
    await insert_rows(ctx, "user_filters", ("user_id", "filter_id", "filter_json"),
                      [(f"@{r[0]}:{ctx.server_name}", r[1], json_text(r[2])) for r in filters], what="filters")


async def _users(ctx: ImportContext) -> None:
    """Synapse keeps ``creation_ts`` in seconds, ours in milliseconds; ``suspended`` came
    with schema 85."""
    suspended = "suspended" if await column_exists(ctx.source, "users", "suspended") else "NULL"
    rows = await ctx.source.fetch(
        "SELECT name, password_hash, creation_ts, admin, is_guest, user_type, deactivated, consent_version,"
        f" consent_ts, shadow_banned, locked, {suspended} FROM users")
    await insert_rows(ctx, "users", ("user_id", "password_hash", "created_ts", "admin", "is_guest", "user_type",
                                     "deactivated", "consent_version", "consent_ts", "shadow_banned", "locked",
                                     "suspended"), [
        (r[0], r[1] or None, int(r[2] or 0) * 1000, bool(r[3]), bool(r[4]), r[5], bool(r[6]), r[7], r[8],
         bool(r[9]), bool(r[10]), bool(r[11])) for r in rows])


async def _profiles(ctx: ImportContext) -> None:
    """Synapse's ``profiles.user_id`` is the localpart (``full_user_id`` the whole ID);
    the extra fields (MSC4133) came with a later schema."""
    fields = ", fields" if await column_exists(ctx.source, "profiles", "fields") else ", NULL"
    rows = await ctx.source.fetch(f"SELECT user_id, displayname, avatar_url{fields} FROM profiles")
    await insert_rows(ctx, "profiles", ("user_id", "displayname", "avatar_url", "fields"), [
        (f"@{r[0]}:{ctx.server_name}", r[1], r[2], json_text(r[3])) for r in rows],
        what="profiles")


async def _devices(ctx: ImportContext) -> None:
    """Devices (not Synapse's hidden ones: the cross-signing keys' pseudo-devices), their
    access and refresh tokens (an admin's "login as" token too: it acts as its
    ``puppets_user_id``), the IdP session each was logged in through, the addresses seen."""
    src = ctx.source
    devices = await src.fetch("SELECT user_id, device_id, display_name, last_seen, ip FROM devices WHERE hidden = $1",
                              False)
    await insert_rows(ctx, "devices", ("user_id", "device_id", "display_name", "last_seen_ts", "last_seen_ip"),
                      devices)
    await _tokens(ctx)
    await insert_rows(ctx, "device_auth_providers",
                      ("user_id", "device_id", "auth_provider_id", "auth_provider_session_id"),
                      await _new_rows(ctx, "device_auth_providers", "user_id, device_id, auth_provider_id,"
                                      " auth_provider_session_id"), what="device IdP sessions")
    ips = await src.fetch(
        "SELECT user_id, device_id, ip, user_agent, MAX(last_seen) FROM user_ips WHERE device_id IS NOT NULL"
        " GROUP BY user_id, device_id, ip, user_agent")
    await insert_rows(ctx, "client_ips", ("user_id", "device_id", "ip", "user_agent", "last_seen"), ips,
                      what="client addresses")


async def _tokens(ctx: ImportContext) -> None:
    """Access tokens, and the refresh tokens of clients that asked for them: each pair
    keeps its link (ours by hash), a refreshed pair its successor, a used token its use."""
    src = ctx.source
    refresh = {r[0]: r[1:] for r in await src.fetch(
        "SELECT id, token, user_id, device_id, next_token_id, expiry_ts, ultimate_session_expiry_ts"
        " FROM refresh_tokens")}
    tokens = await src.fetch(
        "SELECT token, user_id, device_id, valid_until_ms, last_validated, refresh_token_id, used, puppets_user_id"
        " FROM access_tokens")
    access_of = {r[5]: token_hash(r[0]) for r in tokens if r[5] is not None}
    await insert_rows(ctx, "access_tokens", ("token_hash", "user_id", "device_id", "valid_until_ts", "created_ts",
                                             "refresh_token_hash", "first_used_ts", "puppets_user_id"), [
        (token_hash(r[0]), r[1], r[2], r[3], r[4] or ctx.now_ms,
         token_hash(refresh[r[5]][0]) if r[5] in refresh else None, (r[4] or ctx.now_ms) if r[6] else None, r[7])
        for r in tokens], what="access tokens")
    await insert_rows(ctx, "refresh_tokens", ("token_hash", "user_id", "device_id", "access_token_hash", "created_ts",
                                              "expiry_ts", "session_expiry_ts", "next_token_hash"), [
        (token_hash(token), user_id, device_id, access_of.get(rid, ""), ctx.now_ms, expiry, session_expiry,
         token_hash(refresh[next_id][0]) if next_id in refresh else None)
        for rid, (token, user_id, device_id, next_id, expiry, session_expiry) in refresh.items()],
        what="refresh tokens")


async def _new_rows(ctx: ImportContext, table: str, columns: str) -> list:
    """The rows of a table that has the same name and columns on both sides, less those we
    have already (for our tables without a unique key)."""
    have = {tuple(r) for r in await ctx.target.fetch(f"SELECT {columns} FROM {table}")}
    return [tuple(r) for r in await ctx.source.fetch(f"SELECT {columns} FROM {table}") if tuple(r) not in have]
