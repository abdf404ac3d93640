#!/usr/bin/env python3
"""The ledger's hot statements on SQLite, timed alone: herald's own schema (every file of
migrations/sqlite applied in order) and herald's claim / mark / record statements, run from
Python's sqlite3 with herald's pragmas (WAL, synchronous=NORMAL, secure_delete, 64 MiB cache).
What the README's SQLite µs-per-key figures came from; no herald build needed.

    python3 benches/sqlite/ledger_statements.py            # claim forms and the updated_at index
    python3 benches/sqlite/ledger_statements.py --indexes  # the claim without each index
    python3 benches/sqlite/ledger_statements.py --big      # a claim into a campaign of 1,000,000 keys

Timings include Python building each batch's JSON (the same for every variant compared).
"""
import glob, hashlib, json, os, sqlite3, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIGRATIONS = sorted(glob.glob(os.path.join(ROOT, "migrations", "sqlite", "*.sql")))
DB = os.path.join(tempfile.mkdtemp(), "ledger.db")
N = 20000
NOW = int(time.time() * 1000)
KEYS = ["k:camp:" + hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(N)]
PHONES = ["+49151%08d" % (10_000_000 + i) for i in range(N)]
SHARED = ("camp", "job", "106540352242922", "flash_sale", "de", "marketing", "whatsapp")


def connect():
    c = sqlite3.connect(DB, isolation_level=None)
    for p in ("journal_mode=WAL", "synchronous=NORMAL", "secure_delete=ON", "cache_size=-65536"):
        c.execute("PRAGMA " + p)
    return c


def fresh(partial_updated=True):
    """A new database with herald's schema; without the partial `ledger_updated` of
    sqlite 0016 when asked (the full index before it)."""
    for f in glob.glob(DB + "*"):
        os.remove(f)
    c = connect()
    for f in MIGRATIONS:
        if not partial_updated and "_ledger_updated_final" in f:
            continue
        c.executescript(open(f).read())
    return c


def claim(c, keys=KEYS, phones=PHONES, campaign="camp", nine=False):
    for b in range(0, len(keys), 500):
        c.execute("BEGIN IMMEDIATE")
        if nine:
            rows = json.dumps([[k, campaign, *SHARED[1:3], p, *SHARED[3:]]
                               for k, p in zip(keys[b:b + 500], phones[b:b + 500])])
            c.execute("""INSERT INTO ledger (key, campaign, job, sender, recipient, template, language,
                category, channel, state, owner, lease_until, created_at, updated_at)
                SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6,
                       value->>7, value->>8, 'pending', ?1, ?2, ?3, ?3
                FROM json_each(?4) WHERE true ON CONFLICT (key) DO NOTHING""",
                      ("own", NOW + 60000, NOW, rows))
        else:
            rows = json.dumps([[k, p] for k, p in zip(keys[b:b + 500], phones[b:b + 500])])
            c.execute("""INSERT INTO ledger (key, campaign, job, sender, recipient, template, language,
                category, channel, state, owner, lease_until, created_at, updated_at)
                SELECT value->>0, ?5, ?6, ?7, value->>1, ?8, ?9, ?10, ?11, 'pending', ?1, ?2, ?3, ?3
                FROM json_each(?4) WHERE true ON CONFLICT (key) DO NOTHING""",
                      ("own", NOW + 60000, NOW, rows, campaign, *SHARED[1:]))
        c.execute("COMMIT")


def mark(c, keys=KEYS):
    for b in range(0, len(keys), 500):
        c.execute("""UPDATE ledger SET state = 'sending', attempts = attempts + 1, updated_at = ?3
            WHERE key IN (SELECT value FROM json_each(?1)) AND +owner = ?2
              AND state IN ('pending', 'sending')""", (json.dumps(keys[b:b + 500]), "own", NOW))


def record(c, keys=KEYS):
    for b in range(0, len(keys), 500):
        batch = json.dumps([[k, "sent", None, "wamid." + os.urandom(20).hex(), 1]
                            for k in keys[b:b + 500]])
        c.execute("""UPDATE ledger SET state = v.state, reason = v.reason,
                wamid = COALESCE(v.wamid, ledger.wamid), attempts = MAX(ledger.attempts, v.attempts),
                owner = NULL, lease_until = NULL, updated_at = ?2
            FROM (SELECT value->>0 AS key, value->>1 AS state, value->>2 AS reason,
                         value->>3 AS wamid, value->>4 AS attempts FROM json_each(?1)) AS v
            WHERE ledger.key = v.key AND ledger.state IN ('pending', 'sending')""", (batch, NOW))


def timed(f, *a, **k):
    t = time.perf_counter()
    f(*a, **k)
    return (time.perf_counter() - t) * 1e6


def per_key(us, n=N):
    return f"{us / n:6.2f} µs/key"


def forms():
    for _ in range(2):
        for label, nine, partial in [("nine claim columns, full ledger_updated", True, False),
                                     ("shared columns once, full ledger_updated", False, False),
                                     ("shared columns once, final-rows ledger_updated", False, True)]:
            c = fresh(partial)
            print(f"{label:48s} claim {per_key(timed(claim, c, nine=nine))}  "
                  f"mark {per_key(timed(mark, c))}  record {per_key(timed(record, c))}")


def indexes():
    for _ in range(2):
        for drop in [(), ("ledger_campaign",), ("ledger_recipient",), ("ledger_owner",)]:
            c = fresh()
            for d in drop:
                c.execute(f"DROP INDEX {d}")
            label = "claim" + (" without " + drop[0] if drop else ", every index")
            print(f"{label:48s} {per_key(timed(claim, c))}")
        c = fresh()
        c.executescript("DROP INDEX ledger_campaign; CREATE INDEX ledger_campaign ON ledger (campaign);")
        print(f"{'claim, ledger_campaign on (campaign) alone':48s} {per_key(timed(claim, c))}")


def big():
    seed = """WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999999)
        INSERT INTO ledger (key, campaign, job, sender, recipient, template, language, category,
                            channel, state, wamid, attempts, created_at, updated_at)
        SELECT 'k:big:' || lower(hex(randomblob(16))), 'big', 'seed-' || (i / 10000),
               '106540352242922', '+4916' || (100000000 + i), 'flash_sale', 'de', 'marketing',
               'whatsapp', 'sent', 'wamid.' || hex(randomblob(24)), 1, 0, 0 FROM n"""
    for label, extra in [("(campaign, key)", ""),
                         ("(campaign)", "DROP INDEX ledger_campaign; CREATE INDEX ledger_campaign ON ledger (campaign);")]:
        c = fresh()
        if extra:
            c.executescript(extra)
        c.execute(seed)
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.close()
        for campaign in ["fresh", "big"]:
            c = connect()
            keys = [f"k:{campaign}:" + os.urandom(16).hex() for _ in range(10000)]
            cl = timed(claim, c, keys, PHONES[:10000], campaign)
            mr = timed(mark, c, keys) + timed(record, c, keys)
            print(f"ledger_campaign {label:16s} {campaign:5s} claim {per_key(cl, 10000)}  "
                  f"mark+record {per_key(mr, 10000)}")
            c.close()


if __name__ == "__main__":
    {"--indexes": indexes, "--big": big}.get(sys.argv[1] if len(sys.argv) > 1 else "", forms)()
