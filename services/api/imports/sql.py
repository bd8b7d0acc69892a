"""The import's set-based statements over its staging table `import_row` (one transaction).

The field rules come from `shared.domain.clients` (the same as POST /clients); the
opt-out cancel is the same rule as for one client (`services.api.clients.optout`).
"""

from __future__ import annotations

from services.api.clients.optout import cancel_undelivered_sql
from shared.domain.clients import (
    OPTED_OUT_MESSAGE,
    OPTED_OUT_NO,
    OPTED_OUT_YES,
    client_problem_sql,
    default_operator_code_sql,
    normalize_phone_sql,
    phone_refusal_sql,
    valid_phone_sql,
)


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


_YES = f"lower(r.opted_out) IN {_in(OPTED_OUT_YES)}"
_NO = f"lower(r.opted_out) IN {_in(OPTED_OUT_NO)}"
_OPERATOR_CODE = f"coalesce(r.operator_code, {default_operator_code_sql('r.phone')})"
_FIELD, _REASON = client_problem_sql(
    phone="r.phone",
    operator_code="r.operator_code",
    tag="r.tag",
    timezone="r.timezone",
    zones="CAST(:zones AS text[])",
)
_OPTED_OUT_BAD = f"r.opted_out IS NOT NULL AND NOT {_YES} AND NOT {_NO}"

CREATE_STAGING = """
    CREATE TEMP TABLE import_row (
        line bigint, phone text, tag text, timezone text, operator_code text, opted_out text,
        problem_field text, problem_reason text,
        written_phone text  -- the file's phone, when it was normalised into `phone`
    ) ON COMMIT DROP
"""
COPY_STAGING = (
    "COPY import_row (line, phone, tag, timezone, operator_code, opted_out,"
    " problem_field, problem_reason) FROM STDIN"
)

# Phones as people write them (`8 916 123-45-67`) become 79161234567; the rows whose phone
# means no phone are refused with the reason, before the other rules (which then hold).
NORMALIZE_PHONES = f"""
    UPDATE import_row r SET written_phone = r.phone, phone = {normalize_phone_sql("r.phone")}
    WHERE r.problem_reason IS NULL AND NOT {valid_phone_sql("r.phone")}
      AND {normalize_phone_sql("r.phone")} IS NOT NULL
"""
CHECK_PHONES = f"""
    UPDATE import_row r SET problem_field = 'phone', problem_reason = {phone_refusal_sql("r.phone")}
    WHERE r.problem_reason IS NULL AND NOT coalesce({valid_phone_sql("r.phone")}, false)
"""

CHECK_FIELDS = f"""
    UPDATE import_row r SET
        problem_field = coalesce({_FIELD}, 'opted_out'),
        problem_reason = coalesce({_REASON}, '{OPTED_OUT_MESSAGE}')
    WHERE r.problem_reason IS NULL AND ({_FIELD} IS NOT NULL OR {_OPTED_OUT_BAD})
"""

# A phone repeated within the file: its first row counts, later rows are refused. (Rows of a
# bad phone are refused already, whichever comes first: no need to filter them out here.)
CHECK_REPEATS = """
    WITH first AS (
        SELECT phone, min(line) AS line FROM import_row
        WHERE phone IS NOT NULL
        GROUP BY phone HAVING count(*) > 1
    )
    UPDATE import_row r SET problem_field = 'phone', problem_reason = 'duplicate of line ' || f.line
    FROM first f
    WHERE r.phone = f.phone AND r.line > f.line AND r.problem_reason IS NULL
"""

KEEP_REJECTIONS = """
    WITH kept AS (
        INSERT INTO client_import_rejection
            (import_id, line, field, reason, phone, operator_code, tag, timezone, opted_out)
        SELECT :import_id, line, problem_field, problem_reason, coalesce(written_phone, phone),
               operator_code, tag, timezone, opted_out
        FROM import_row WHERE problem_reason IS NOT NULL
        RETURNING 1
    )
    SELECT count(*) FROM kept
"""

VALID_ROWS = (
    "SELECT count(*) AS valid, count(written_phone) AS normalized FROM import_row"
    " WHERE problem_reason IS NULL"
)

# Imports write the directory one at a time (held until the import's transaction ends; reading
# and checking the file stay concurrent). Two imports over the same phones, in different orders,
# would otherwise lock rows (or wait on each other's new phones) in opposite orders, and
# PostgreSQL would end one with a deadlock error.
TAKE_TURNS = "SELECT pg_advisory_xact_lock(hashtext('client_import'))"

INSERT_NEW = f"""
    WITH inserted AS (
        INSERT INTO client (phone, operator_code, tag, timezone, opted_out_at)
        SELECT r.phone, {_OPERATOR_CODE}, r.tag, r.timezone, CASE WHEN {_YES} THEN now() END
        FROM import_row r
        WHERE r.problem_reason IS NULL
        ORDER BY r.line
        ON CONFLICT (phone) WHERE deleted_at IS NULL DO NOTHING
        RETURNING 1
    )
    SELECT count(*) FROM inserted
"""

_NEW_OPTED_OUT = (
    f"CASE WHEN {_YES} THEN coalesce(c.opted_out_at, now()) WHEN {_NO} THEN NULL"
    " ELSE c.opted_out_at END"
)

# on_conflict=update: existing live clients take the file's values; a row that changes
# nothing is counted as skipped. Clients it opts out lose their undelivered messages.
UPDATE_EXISTING = f"""
    WITH changed AS (
        UPDATE client c SET
            operator_code = {_OPERATOR_CODE},
            tag = r.tag,
            timezone = r.timezone,
            opted_out_at = {_NEW_OPTED_OUT},
            updated_at = now()
        FROM import_row r
        WHERE r.problem_reason IS NULL AND c.phone = r.phone AND c.deleted_at IS NULL
          AND (c.operator_code, c.tag, c.timezone, c.opted_out_at IS NULL)
              IS DISTINCT FROM ({_OPERATOR_CODE}, r.tag, r.timezone, {_NEW_OPTED_OUT} IS NULL)
        RETURNING c.id, c.opted_out_at
    ),
    cancelled AS (
        {cancel_undelivered_sql("SELECT id FROM changed WHERE opted_out_at IS NOT NULL")}
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM changed) AS updated, (SELECT count(*) FROM cancelled) AS cancelled
"""

FINISH = """
    UPDATE client_import SET status = 'done', created = :created, updated = :updated,
        skipped = :skipped, rejected = :rejected, normalized = :normalized, finished_at = now()
    WHERE id = :import_id
"""

FAIL = """
    UPDATE client_import SET status = 'failed', error = :error, finished_at = now()
    WHERE id = :import_id AND status = 'running'
"""

# An import holds this advisory lock (key, its id) while its transaction is open: a `running`
# import whose lock nobody holds belongs to a process that died, and has changed nothing.
LOCK_KEY = 0x494D  # "IM"
LOCK = "SELECT pg_advisory_xact_lock(:key, CAST(:import_id AS int))"
ORPHANED = """
    SELECT NOT EXISTS (
        SELECT 1 FROM pg_locks
        WHERE locktype = 'advisory' AND classid = :key AND objid = :import_id AND objsubid = 2
    )
"""
NEXT_ID = "SELECT nextval(pg_get_serial_sequence('client_import', 'id'))"
