"""The SQL one backfill runs, built from its typed job and the run's tenant: text and parameters, no I/O.

A batch is bounded by the cursor (exclusive) and, for a job split into key
ranges, by its range's upper bound (inclusive): ``scope`` adds both, so a
worker never reads or writes a key outside its range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kitbuilder.apply import state
from kitbuilder.core.jobs import BackfillJob as JobSpec
from kitbuilder.core.jobs import named_parameters

Sql = tuple[str, dict[str, Any]]

# The first and last key of a batch and its size. By ORDER BY, not MIN/MAX: PostgreSQL has no min(uuid), and
# every key a backfill pages by is orderable.
_BOUNDS = (
    "(SELECT kit_k FROM kit_batch ORDER BY kit_k LIMIT 1) AS lo, "
    "(SELECT kit_k FROM kit_batch ORDER BY kit_k DESC LIMIT 1) AS hi, (SELECT COUNT(*) FROM kit_batch) AS n"
)


@dataclass(frozen=True)
class JobSql:
    job: JobSpec
    tenant: str | None  # --tenant: every statement is limited to this tenant's rows

    @property
    def table(self) -> str:
        return self.job.table

    @property
    def key(self) -> str:
        return self.job.key

    def tenant_filter(self) -> str:
        return f" AND {self.job.tenant_column} = :tenant" if self.tenant is not None else ""

    def params(self, **extra: Any) -> dict[str, Any]:
        params = dict(extra)
        if self.tenant is not None:
            params["tenant"] = self.tenant
        return params

    def _in_scope(self) -> str:
        return f"({self.job.predicate}){self.tenant_filter()}"

    def scope(self, cursor: Any, hi: Any) -> Sql:
        """Keys after ``cursor`` (exclusive) up to ``hi`` (inclusive); None leaves that side open.

        Never a NULL key, even with both sides open: a batch ending in NULL has no last key to move the
        cursor to (it stayed at the start, forever). Rows with a NULL key are refused by the job instead.
        """
        text, params = f" AND {self.key} IS NOT NULL", self.params()
        if cursor is not None:
            text += f" AND {self.key} > :cursor"
            params["cursor"] = cursor
        if hi is not None:
            text += f" AND {self.key} <= :range_hi"
            params["range_hi"] = hi
        return text, params

    def _assignments(self) -> str:
        return ", ".join(f"{column} = {expression}" for column, expression in self.job.set)

    def statement_text(self) -> str:
        """The UPDATE each batch runs (``:lo``/``:hi`` are the batch's first and last key), for dry runs."""
        if self.job.update is not None:
            return self.job.update.strip()
        return (
            f"UPDATE {self.table} SET {self._assignments()} WHERE {self.key} >= :lo AND {self.key} <= :hi "
            f"AND {self._in_scope()}"
        )

    def update_range(self, lo: Any, hi: Any) -> Sql:
        """The batch [lo, hi]: the job's own ``update`` statement, or the UPDATE its ``set`` makes."""
        if self.job.update is not None:
            # An update statement that uses :tenant gets NULL on a full run, so it can say
            # `(CAST(:tenant AS TEXT) IS NULL OR tenant = :tenant)` and serve both.
            params = self.params(lo=lo, hi=hi)
            if "tenant" in named_parameters(self.job.update):
                params.setdefault("tenant", None)
            return self.job.update, params
        return self.statement_text(), self.params(lo=lo, hi=hi)

    def remaining(self) -> Sql:
        return f"SELECT COUNT(*) FROM {self.table} WHERE {self._in_scope()}", self.params()

    def null_keys(self) -> Sql:
        """Rows in scope whose key is NULL: keyset pagination cannot reach them."""
        return f"SELECT COUNT(*) FROM {self.table} WHERE {self.key} IS NULL AND {self._in_scope()}", self.params()

    def remaining_by_tenant(self) -> Sql:
        column = self.job.tenant_column
        return (
            f"SELECT {column}, COUNT(*) FROM {self.table} WHERE {self._in_scope()} GROUP BY {column} ORDER BY {column}",
            self.params(),
        )

    def next_batch(self, cursor: Any, hi: Any, size: int) -> Sql:
        """(first key, last key, rows) of the next batch after ``cursor``; only the bounds travel back."""
        scope, params = self.scope(cursor, hi)
        return (
            f"WITH kit_batch AS (SELECT {self.key} AS kit_k FROM {self.table} WHERE {self._in_scope()}{scope} "
            f"ORDER BY {self.key} LIMIT {int(size)}) SELECT {_BOUNDS}",
            params,
        )

    def fused_batch(self, cursor: Any, hi: Any, size: int, record: Sql) -> Sql:
        """Find, update and record the next batch in one statement (PostgreSQL, ``set:`` jobs): last key, rows.

        The batch's edge is the ``size``-th matching key after ``cursor`` (an index scan that keeps no
        list of keys and sorts nothing); the UPDATE takes the keys after ``cursor`` up to it: one index
        range scan. With fewer rows left the batch runs to the range's upper bound (or the table's last
        key), and its last key is the greatest it updated. The last key is NULL only when nothing was
        left: the range is done. ``record`` (from the state store) appends the CTEs that move the cursor
        and the totals and add the batch row, reading ``kit_done``; run on its own (autocommit) the
        statement is the batch's whole transaction.
        """
        scope, params = self.scope(cursor, hi)
        key, table = self.key, self.table
        after = f" AND {key} > :cursor" if cursor is not None else ""
        # A bound the planner can use as an index condition, also when no edge was found.
        end = (
            ":range_hi"
            if hi is not None
            else f"(SELECT {key} FROM {table} WHERE {key} IS NOT NULL ORDER BY {key} DESC LIMIT 1)"
        )
        record_text, record_params = record
        return (
            f"WITH kit_edge AS (SELECT (SELECT {key} FROM {table} WHERE {self._in_scope()}{scope} "
            f"ORDER BY {key} OFFSET {int(size) - 1} LIMIT 1) AS edge), "
            f"kit_updated AS (UPDATE {table} SET {self._assignments()} WHERE {key} <= "
            f"COALESCE((SELECT edge FROM kit_edge), {end}){after} AND {self._in_scope()} RETURNING {key} AS kit_k), "
            "kit_last AS (SELECT COALESCE((SELECT edge FROM kit_edge), "
            "(SELECT kit_k FROM kit_updated ORDER BY kit_k DESC LIMIT 1)) AS last, "
            "(SELECT COUNT(*) FROM kit_updated) AS changed), "
            # kit_last is complete (every row updated) before this reads the clock: the batch's time.
            f"kit_done AS (SELECT {state.encode_key_sql('l.last')} AS cursor_to, l.changed AS size, "
            "l.changed AS processed, "
            "CAST(1000 * EXTRACT(EPOCH FROM clock_timestamp() - statement_timestamp()) AS INTEGER) AS duration_ms "
            "FROM kit_last l WHERE l.last IS NOT NULL)"
            f"{record_text} "
            "SELECT last, changed FROM kit_last",
            {**params, **record_params},
        )

    def keys_between(self, first: Any, last: Any) -> Sql:
        return (
            f"SELECT {self.key} FROM {self.table} WHERE {self.key} >= :lo AND {self.key} <= :hi "
            f"AND {self._in_scope()} ORDER BY {self.key}",
            self.params(lo=first, hi=last),
        )

    def key_matches(self, key: Any, *, in_scope: bool) -> Sql:
        """Whether the row of ``key`` still matches the predicate (and, ``in_scope``, is the run's tenant's)."""
        where = self._in_scope() if in_scope else f"({self.job.predicate})"
        params = self.params(k=key) if in_scope else {"k": key}
        return f"SELECT COUNT(*) FROM {self.table} WHERE {self.key} = :k AND {where}", params

    def key_fits(self, value: Any) -> Sql:
        """A probe that fails (a RowError/StatementError) when ``value`` cannot be compared with the key."""
        return f"SELECT 1 FROM {self.table} WHERE {self.key} > :cursor LIMIT 1", {"cursor": value}

    def table_rows(self) -> Sql:
        """PostgreSQL: the planner's row estimate of the job's table if it is a plain table (else no row)."""
        return (
            "SELECT reltuples FROM pg_class WHERE oid = to_regclass(:kit_table) AND relkind = 'r'",
            {"kit_table": self.table},
        )

    def boundaries(self, pieces: int, sample_percent: float | None = None) -> Sql:
        """PostgreSQL: the keys cutting the rows still in scope into ``pieces`` runs of equal size, in key order.

        One ordered pass over the matching keys (percentile_disc sorts them by the key's own ordering,
        collation included, so text keys split as the batches page them); with ``sample_percent``, over
        the keys of that share of the table's pages (TABLESAMPLE SYSTEM): cuts of a large table in a
        fraction of a full scan, about as even.
        """
        fractions = ", ".join(repr(i / pieces) for i in range(1, pieces))
        sample = f" TABLESAMPLE SYSTEM ({sample_percent:.6f})" if sample_percent is not None else ""
        return (
            f"SELECT percentile_disc(ARRAY[{fractions}]::float8[]) WITHIN GROUP (ORDER BY {self.key}) "
            f"FROM {self.table}{sample} WHERE {self._in_scope()}",
            self.params(),
        )
