"""The volunteer ledger: invites, agents, their keys, the cell queue and leases, in SQLite.

Volunteer boxes sit behind NAT and belong to people we do not control, so they never join
the Ray cluster; they pull cells from the work API (``coordinator/volunteers/workapi.py``), which keeps
its state here. Admin commands (`hwmatrix volunteers invite/approve/list/revoke`) open the
same file on the coordinator's machine: nothing of administration travels over the network.

Secrets are stored hashed. Keys and codes are long random strings, so one SHA-256 is enough
(a slow password hash protects guessable passwords, which these are not) and lookups stay
O(1). A key's fingerprint (a prefix of that hash) is what records and listings show.
"""
from __future__ import annotations

import hashlib
import json
import random
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from coordinator.volunteers.volunteer_input import NAME_MAX, InputError, check_profile, check_text

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"     # no 0/O, 1/I: read aloud or typed
DEFAULT_CODE_TTL_S = 24 * 3600
DEFAULT_LEASE_S = 120
DEFAULT_KEY_TTL_S = 90 * 24 * 3600
DEFAULT_ROTATE_AFTER_S = 30 * 24 * 3600
DEFAULT_GRACE_S = 3600                  # an old key keeps working this long after a rotation

SCHEMA = """
CREATE TABLE IF NOT EXISTS invites (
  code_hash TEXT PRIMARY KEY, created REAL, expires REAL, approved INTEGER, used_by TEXT, used_at REAL);
CREATE TABLE IF NOT EXISTS agents (
  agent_id TEXT PRIMARY KEY, name TEXT, state TEXT, profile TEXT, hardware_class TEXT,
  enrolled REAL, last_seen REAL, agreed INTEGER DEFAULT 0, disagreed INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS keys (
  key_hash TEXT PRIMARY KEY, agent_id TEXT, fingerprint TEXT, created REAL, expires REAL, revoked REAL);
CREATE TABLE IF NOT EXISTS cells (
  run_id TEXT, cell_id TEXT, spec TEXT, requirement TEXT, store_url TEXT, queued REAL, replicate REAL,
  PRIMARY KEY (run_id, cell_id));
CREATE TABLE IF NOT EXISTS claims (
  run_id TEXT, cell_id TEXT, hardware_class TEXT, role TEXT, state TEXT, agent_id TEXT, lease_id TEXT,
  lease_expires REAL, attempts INTEGER DEFAULT 0, not_agent TEXT, reason TEXT, updated REAL,
  PRIMARY KEY (run_id, cell_id, hardware_class, role));
CREATE TABLE IF NOT EXISTS checks (
  run_id TEXT, cell_id TEXT, hardware_class TEXT, agents TEXT, verdict TEXT, detail TEXT, at REAL);
CREATE TABLE IF NOT EXISTS profile_changes (
  agent_id TEXT PRIMARY KEY, profile TEXT, hardware_class TEXT, change TEXT, at REAL);
"""


class Refused(Exception):
    """A request the API turns down; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def fingerprint(key: str) -> str:
    """What records and listings show of a key: never the key."""
    return "sha256:" + digest(key)[:16]


def new_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(16))      # 80 bits
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def normal_code(code: str) -> str:
    return "-".join(_chunks("".join(ch for ch in str(code).upper() if ch.isalnum())))


def _chunks(text: str) -> list[str]:
    return [text[i:i + 4] for i in range(0, len(text), 4)]


@dataclass
class Caller:
    """An authenticated agent."""
    agent_id: str
    fingerprint: str
    rotate: bool          # its key is old: it should rotate


class Ledger:
    """All volunteer state, one SQLite file; safe across threads and processes (WAL)."""

    def __init__(self, state_dir: str | Path):
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.dir / "volunteers.sqlite"
        self._local = threading.local()
        self._lock = threading.Lock()
        with sqlite3.connect(self.path) as conn:
            conn.executescript(SCHEMA)
        self.path.chmod(0o600)

    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return _Tx(conn, self._lock)

    # ------------------------------------------------------------ invites and enrollment

    def invite(self, ttl_s: float = DEFAULT_CODE_TTL_S, approved: bool = False) -> str:
        code = new_code()
        now = time.time()
        with self._db() as db:
            db.execute("INSERT INTO invites VALUES (?,?,?,?,NULL,NULL)", (digest(code), now, now + ttl_s, int(approved)))
        return code

    def enroll(self, code: str, name: str, profile: dict) -> tuple[str, str, str]:
        """Spend a one-time code: a new agent and its key (returned once, kept hashed). A name
        or profile with control characters is refused before the code is spent."""
        try:
            check_text("name", name, NAME_MAX)
            check_profile(profile)
        except InputError as exc:
            raise Refused(400, str(exc)) from None
        now = time.time()
        agent_id = f"v-{_safe(name)[:24]}-{secrets.token_hex(3)}"
        with self._db() as db:
            row = db.execute("SELECT * FROM invites WHERE code_hash=?", (digest(normal_code(code)),)).fetchone()
            if row is None or row["used_by"] is not None or row["expires"] <= now:
                why = ("unknown enrollment code" if row is None else
                       "enrollment code already used" if row["used_by"] else "enrollment code expired")
                raise Refused(403, why)
            db.execute("UPDATE invites SET used_by=?, used_at=? WHERE code_hash=?", (agent_id, now, row["code_hash"]))
            state = "approved" if row["approved"] else "pending"
            db.execute("INSERT INTO agents (agent_id, name, state, profile, hardware_class, enrolled, last_seen) "
                       "VALUES (?,?,?,?,?,?,?)", (agent_id, name, state, json.dumps(profile),
                                                  str(profile.get("hardware_class") or "unknown"), now, now))
            key = self._new_key(db, agent_id, now)
        return agent_id, key, state

    def _new_key(self, db, agent_id: str, now: float, ttl_s: float | None = None) -> str:
        key = "hwmk_" + secrets.token_urlsafe(32)
        ttl = ttl_s if ttl_s is not None else self.setting("key_ttl_s", DEFAULT_KEY_TTL_S)
        db.execute("INSERT INTO keys VALUES (?,?,?,?,?,NULL)", (digest(key), agent_id, fingerprint(key), now, now + ttl))
        return key

    def settings(self) -> dict:
        path = self.dir / "settings.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def setting(self, name: str, default: float) -> float:
        return float(self.settings().get(name, default))

    def configure(self, **values) -> None:
        """Server options the admin commands must agree on (key lifetimes)."""
        merged = {**self.settings(), **{k: v for k, v in values.items() if v is not None}}
        (self.dir / "settings.json").write_text(json.dumps(merged, indent=2))

    # ------------------------------------------------------------ keys

    def authenticate(self, key: str) -> Caller:
        """The agent a key belongs to; wrong, revoked, expired keys and unapproved agents are refused."""
        now = time.time()
        with self._db() as db:
            row = db.execute("SELECT k.*, a.state FROM keys k JOIN agents a USING (agent_id) WHERE key_hash=?",
                             (digest(key),)).fetchone()
            if row is None:
                raise Refused(401, "unknown key")
            if row["revoked"] is not None and row["revoked"] <= now:
                raise Refused(401, "key revoked" if row["state"] == "revoked" or not self._rotated(db, row)
                              else "key replaced by a newer one (rotation grace over)")
            if row["expires"] <= now:
                raise Refused(401, "key expired; enroll again with a new code")
            if row["state"] == "revoked":
                raise Refused(401, "agent revoked")
            if row["state"] != "approved":
                change = db.execute("SELECT change FROM profile_changes WHERE agent_id=?",
                                    (row["agent_id"],)).fetchone()
                raise Refused(403, "awaiting approval by the coordinator's admin" if change is None
                              else "awaiting approval: " + profile_changed_message(row["agent_id"], change["change"]))
            db.execute("UPDATE agents SET last_seen=? WHERE agent_id=?", (now, row["agent_id"]))
        rotate = now - row["created"] > self.setting("rotate_after_s", DEFAULT_ROTATE_AFTER_S)
        return Caller(row["agent_id"], row["fingerprint"], rotate)

    @staticmethod
    def _rotated(db, row) -> bool:
        newer = db.execute("SELECT 1 FROM keys WHERE agent_id=? AND created>? AND revoked IS NULL",
                           (row["agent_id"], row["created"])).fetchone()
        return newer is not None

    def fingerprints(self, agent_id: str) -> set[str]:
        """Every fingerprint this agent's keys ever had (a record may predate a rotation)."""
        with self._db() as db:
            return {r["fingerprint"] for r in db.execute("SELECT fingerprint FROM keys WHERE agent_id=?", (agent_id,))}

    def rotate(self, caller: Caller, old_key: str) -> str:
        """A new key; the old one keeps working for the grace period, so an agent mid-cell
        (or one whose answer got lost) is not cut off."""
        now = time.time()
        grace = self.setting("grace_s", DEFAULT_GRACE_S)
        with self._db() as db:
            key = self._new_key(db, caller.agent_id, now)
            db.execute("UPDATE keys SET revoked=? WHERE key_hash=? AND (revoked IS NULL OR revoked>?)",
                       (now + grace, digest(old_key), now + grace))
        return key

    # ------------------------------------------------------------ admin

    def approve(self, agent_id: str) -> None:
        """Let the agent take work; a changed profile waiting for approval becomes its profile."""
        self._set_state(agent_id, "approved", ("pending", "approved"))
        with self._db() as db:
            change = db.execute("SELECT * FROM profile_changes WHERE agent_id=?", (agent_id,)).fetchone()
            if change is not None:
                db.execute("UPDATE agents SET profile=?, hardware_class=? WHERE agent_id=?",
                           (change["profile"], change["hardware_class"], agent_id))
                db.execute("DELETE FROM profile_changes WHERE agent_id=?", (agent_id,))

    def enrolled(self, agent_id: str) -> tuple[dict, str]:
        """The profile and hardware class the admin approved: what the agent may lease as."""
        with self._db() as db:
            row = db.execute("SELECT profile, hardware_class FROM agents WHERE agent_id=?", (agent_id,)).fetchone()
        if row is None:
            raise Refused(404, f"no agent {agent_id!r}")
        return json.loads(row["profile"] or "{}"), row["hardware_class"] or "unknown"

    def hold_for_approval(self, agent_id: str, profile: dict, change: str) -> int:
        """The agent now reports other hardware: it takes no work until the admin approves the
        new profile (kept here until then); its leases go back to the queue at once."""
        now = time.time()
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO profile_changes VALUES (?,?,?,?,?)",
                       (agent_id, json.dumps(profile), str(profile.get("hardware_class") or "unknown"), change, now))
            db.execute("UPDATE agents SET state='pending' WHERE agent_id=? AND state='approved'", (agent_id,))
            return db.execute("UPDATE claims SET state='queued', agent_id=NULL, lease_id=NULL, reason=? "
                              "WHERE agent_id=? AND state='leased'", ("agent's profile changed", agent_id)).rowcount

    def revoke(self, agent_id: str) -> int:
        """Refuse the agent from its next call on; its leases go back to the queue at once."""
        now = time.time()
        self._set_state(agent_id, "revoked", ("pending", "approved", "revoked"))
        with self._db() as db:
            db.execute("UPDATE keys SET revoked=? WHERE agent_id=? AND (revoked IS NULL OR revoked>?)",
                       (now, agent_id, now))
            return db.execute("UPDATE claims SET state='queued', agent_id=NULL, lease_id=NULL, reason=? "
                              "WHERE agent_id=? AND state='leased'", ("agent revoked", agent_id)).rowcount

    def _set_state(self, agent_id: str, state: str, allowed_from: tuple) -> None:
        with self._db() as db:
            row = db.execute("SELECT state FROM agents WHERE agent_id=?", (agent_id,)).fetchone()
            if row is None:
                raise Refused(404, f"no agent {agent_id!r}")
            if row["state"] not in allowed_from:
                raise Refused(409, f"agent {agent_id} is {row['state']}")
            db.execute("UPDATE agents SET state=? WHERE agent_id=?", (state, agent_id))

    def agents(self) -> list[dict]:
        with self._db() as db:
            rows = [dict(r) for r in db.execute("SELECT * FROM agents ORDER BY enrolled")]
            for row in rows:
                keys = db.execute("SELECT fingerprint FROM keys WHERE agent_id=? AND (revoked IS NULL OR revoked>?) "
                                  "AND expires>? ORDER BY created", (row["agent_id"], time.time(), time.time()))
                row["keys"] = [k["fingerprint"] for k in keys]
                row["leases"] = db.execute("SELECT count(*) FROM claims WHERE agent_id=? AND state='leased'",
                                           (row["agent_id"],)).fetchone()[0]
                row["profile"] = json.loads(row["profile"] or "{}")
                change = db.execute("SELECT change FROM profile_changes WHERE agent_id=?",
                                    (row["agent_id"],)).fetchone()
                row["profile_change"] = change["change"] if change else None
        return rows

    def claims(self) -> list[dict]:
        with self._db() as db:
            return [dict(r) for r in db.execute("SELECT * FROM claims ORDER BY run_id, cell_id, role")]

    def queued_cells(self) -> int:
        with self._db() as db:
            return db.execute("SELECT count(*) FROM cells").fetchone()[0]

    # ------------------------------------------------------------ queue and leases

    def queue(self, run_id: str, cell_id: str, spec: dict, requirement: dict, store_url: str,
              replicate: float) -> bool:
        """Offer a cell to volunteers (once per hardware class); False if it was queued before."""
        with self._db() as db:
            return db.execute("INSERT OR IGNORE INTO cells VALUES (?,?,?,?,?,?,?)",
                              (run_id, cell_id, json.dumps(spec), json.dumps(requirement), store_url,
                               time.time(), replicate)).rowcount == 1

    def lease(self, caller: Caller, hw_class: str, fits, lease_s: float) -> dict | None:
        """The first cell this agent may take: a replica check waiting for its class (from
        another agent), else a cell its class has not got yet (or whose lease lapsed).
        ``fits(cell_row) -> bool`` applies hardware and the owner's terms."""
        now = time.time()
        with self._db() as db:
            claims = {(r["run_id"], r["cell_id"], r["role"]): dict(r) for r in db.execute(
                "SELECT * FROM claims WHERE hardware_class=?", (hw_class,))}
            for row in db.execute("SELECT * FROM cells ORDER BY queued, rowid"):
                cell = dict(row)
                for role in ("replica", "primary"):
                    claim = claims.get((cell["run_id"], cell["cell_id"], role))
                    if role == "replica" and claim is None:
                        continue
                    if claim and not _takeable(claim, caller.agent_id, now):
                        continue
                    if not fits(cell):
                        break
                    lease_id = secrets.token_urlsafe(16)
                    db.execute("INSERT INTO claims (run_id, cell_id, hardware_class, role, state, agent_id, lease_id, "
                               "lease_expires, attempts, not_agent, reason, updated) VALUES (?,?,?,?,?,?,?,?,1,NULL,NULL,?) "
                               "ON CONFLICT DO UPDATE SET state='leased', agent_id=excluded.agent_id, "
                               "lease_id=excluded.lease_id, lease_expires=excluded.lease_expires, "
                               "attempts=attempts+1, updated=excluded.updated",
                               (cell["run_id"], cell["cell_id"], hw_class, role, "leased", caller.agent_id,
                                lease_id, now + lease_s, now))
                    return {"lease_id": lease_id, "role": role, "spec": json.loads(cell["spec"]),
                            "run_id": cell["run_id"], "cell_id": cell["cell_id"], "store_url": cell["store_url"]}
        return None

    def held(self, caller: Caller, lease_id: str) -> dict:
        """The live lease ``lease_id`` of this agent, or 410 when it lapsed and went back."""
        with self._db() as db:
            row = db.execute("SELECT c.*, q.spec, q.store_url, q.replicate FROM claims c JOIN cells q "
                             "USING (run_id, cell_id) WHERE lease_id=?", (str(lease_id),)).fetchone()
        if row is None or row["agent_id"] != caller.agent_id:
            raise Refused(410, "no such lease (it lapsed and the cell went back to the queue)")
        if row["state"] != "leased":
            raise Refused(410, f"the lease is over (cell {row['state']})")
        if row["lease_expires"] <= time.time():
            raise Refused(410, "the lease lapsed (no heartbeat) and the cell went back to the queue")
        return dict(row)

    def heartbeat(self, caller: Caller, lease_id: str, lease_s: float) -> float:
        self.held(caller, lease_id)
        expires = time.time() + lease_s
        with self._db() as db:
            db.execute("UPDATE claims SET lease_expires=?, updated=? WHERE lease_id=? AND state='leased'",
                       (expires, time.time(), lease_id))
        return expires

    def release(self, caller: Caller, lease_id: str, reason: str) -> None:
        """The agent gives a cell back (its owner's policy refused it, or it is stopping):
        another agent of the class may take it; this one is not offered it again."""
        claim = self.held(caller, lease_id)
        with self._db() as db:
            db.execute("UPDATE claims SET state='queued', agent_id=NULL, lease_id=NULL, reason=?, updated=?, "
                       "not_agent=? WHERE lease_id=?", (str(reason)[:300], time.time(),
                                                       _add_agent(claim["not_agent"], caller.agent_id), lease_id))

    def finish(self, caller: Caller, lease_id: str, status: str, base_replicate: float) -> dict:
        """The record is stored: close the claim; maybe queue a replica for another agent of the class."""
        claim = self.held(caller, lease_id)
        now = time.time()
        state = "done" if status == "ok" else "failed"
        # read before the transaction: the ledger's lock is not re-entrant
        rate = self.recheck_rate(caller.agent_id, claim["replicate"] if claim["replicate"] is not None
                                 else base_replicate)
        with self._db() as db:
            db.execute("UPDATE claims SET state=?, lease_expires=NULL, reason=?, updated=? WHERE lease_id=?",
                       (state, None if status == "ok" else status, now, lease_id))
            replica = None
            if claim["role"] == "primary" and status == "ok":
                if random.random() < rate:
                    db.execute("INSERT OR IGNORE INTO claims (run_id, cell_id, hardware_class, role, state, "
                               "not_agent, updated) VALUES (?,?,?,'replica','queued',?,?)",
                               (claim["run_id"], claim["cell_id"], claim["hardware_class"], caller.agent_id, now))
                    replica = rate
        return {"state": state, "replica_rate": replica, **{k: claim[k] for k in
                                                             ("run_id", "cell_id", "hardware_class", "role")}}

    def primary_agent(self, run_id: str, cell_id: str, hw_class: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT agent_id FROM claims WHERE run_id=? AND cell_id=? AND hardware_class=? "
                             "AND role='primary' AND state='done'", (run_id, cell_id, hw_class)).fetchone()
        return row["agent_id"] if row else None

    # ------------------------------------------------------------ track records

    def recheck_rate(self, agent_id: str, base: float) -> float:
        from coordinator.results.crosscheck import recheck_rate

        with self._db() as db:
            row = db.execute("SELECT agreed, disagreed FROM agents WHERE agent_id=?", (agent_id,)).fetchone()
        return recheck_rate(row["agreed"] if row else 0, row["disagreed"] if row else 0, base) if base > 0 else 0.0

    def note_check(self, run_id: str, cell_id: str, hw_class: str, agents: list[str], verdict: str,
                   detail: str, blame: list[str] | None = None) -> None:
        """A replica's verdict: both agents' track records move (we can't tell which one is off),
        unless ``blame`` names the one whose record was bad."""
        column = {"agree": "agreed", "disagree": "disagreed"}.get(verdict)
        with self._db() as db:
            db.execute("INSERT INTO checks VALUES (?,?,?,?,?,?,?)",
                       (run_id, cell_id, hw_class, json.dumps(agents), verdict, detail, time.time()))
            if column:
                for agent in agents if blame is None else blame:
                    db.execute(f"UPDATE agents SET {column}={column}+1 WHERE agent_id=?", (agent,))

    def checks(self) -> list[dict]:
        with self._db() as db:
            return [dict(r) for r in db.execute("SELECT * FROM checks ORDER BY at")]


def profile_changed_message(agent_id: str, change: str) -> str:
    return (f"this machine's profile changed since enrollment ({change}); an admin must approve it again: "
            f"hwmatrix volunteers approve {agent_id}")


def _takeable(claim: dict, agent_id: str, now: float) -> bool:
    if agent_id in (claim.get("not_agent") or "").split(","):
        return False
    if claim["state"] == "queued":
        return True
    return claim["state"] == "leased" and (claim["lease_expires"] or 0) <= now


def _add_agent(listed: str | None, agent_id: str) -> str:
    return ",".join(sorted(set(filter(None, (listed or "").split(","))) | {agent_id}))


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in str(text)) or "agent"


class _Tx:
    """``with ledger._db() as db``: one immediate transaction, serialised within the process."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock):
        self.conn, self.lock = conn, lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.lock.release()
