"""The one compiler: a validated tree (segments.model.Tree) -> one SQL predicate over a contact row
and its parameters. Pure: no I/O.

    sql, args = compile_tree(tree, first=3, workspace="$1")
    # "... c.country = $3::text ..." with args[0] == "FR": after the caller's own $1 and $2

Every value of the tree is a parameter (JSON paths too: `#> $n::text[]`); the SQL text holds only
the compiler's own words, column names taken from segments.model's tables and the parameter
references the caller passes (`workspace`, `scope`), never text from the request.

Leaves on other tables (list memberships, the timeline, custom events) are uncorrelated
subqueries, `c.email IN (SELECT email ... GROUP BY email HAVING ...)`, which PostgreSQL evaluates
once per statement (a hash), not once per contact. `scope`, when given, restricts each of them to
the caller's candidates (a template of the subquery's email column `{a}`: a range of emails for a
build chunk, an array for the incremental check), so a check of one contact reads one contact's
rows. The same predicate serves the build's chunks, the preview, the incremental checks and a
broadcast's audience. No comparison can fail on data: JSON values are read by type (a number only
when it is a JSON number, a time only through `segment_try_time`, migration 0014), never cast
blindly.
"""

from __future__ import annotations

from postroom.contacts.query import like_pattern
from postroom.segments import model
from postroom.timeline import model as timeline_model

_CMP = {"equals": "=", "not_equals": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=",
        "before_date": "<", "after_date": ">"}
_CAST = {"string": "text", "number": "float8", "time": "timestamptz", "json": "text"}


class _Params:
    def __init__(self, first: int, workspace: str, scope: str) -> None:
        self.first = first
        self.args: list = []
        self.workspace = workspace
        self.scope = scope

    def within(self, alias: str) -> str:
        """The candidates' restriction on a subquery's rows (`alias`.email)."""
        return f" AND {self.scope.format(a=alias)}" if self.scope else ""

    def add(self, value, cast: str) -> str:
        self.args.append(value)
        return f"${self.first + len(self.args) - 1}::{cast}"


def compile_tree(tree: model.Tree, first: int = 1, workspace: str = "$1", alias: str = "c",
                 scope: str = "") -> tuple[str, list]:
    """(predicate, args): parameters numbered from `first`; `workspace` is the caller's parameter
    holding the workspace id, `alias` the contacts row, `scope` an optional restriction of the
    subqueries to the candidates (see the module's docstring)."""
    params = _Params(first, workspace, scope)
    return _node(tree.root, params, alias), params.args


def _node(node, p: _Params, c: str) -> str:
    if isinstance(node, model.Branch):
        joiner = " AND " if node.operator == "and" else " OR "
        return "(" + joiner.join(_node(child, p, c) for child in node.children) + ")"
    if isinstance(node, model.ContactLeaf):
        return "(" + " AND ".join(_contact_filter(f, p, c) for f in node.filters) + ")"
    if isinstance(node, model.ListLeaf):
        return _list_leaf(node, p, c)
    if isinstance(node, model.TimelineLeaf):
        return _timeline_leaf(node, p, c)
    return _goal_leaf(node, p, c)


# ---------------------------------------------------------------- contact filters

def _json_reads(col: str, path_param: str) -> dict[str, str]:
    """The value at the path read as each type (NULL when it is not one)."""
    at = f"({col} #> {path_param})"
    return {
        "json": f"(CASE WHEN jsonb_typeof({at}) = 'string' THEN {at} #>> '{{}}' ELSE {at}::text END)",
        "number": f"(CASE WHEN jsonb_typeof({at}) = 'number' THEN ({at}::text)::numeric END)",
        "time": f"(CASE WHEN jsonb_typeof({at}) = 'string' THEN segment_try_time({at} #>> '{{}}') END)",
        "at": at,
    }


def _contact_filter(f: model.Filter, p: _Params, c: str) -> str:
    col = f"{c}.{model.COLUMNS[f.field]}"
    if f.path is None:
        if f.operator == "is_set":
            return f"{col} IS NOT NULL"
        if f.operator == "is_not_set":
            return f"{col} IS NULL"
        return _compare(col, f, p)
    reads = _json_reads(col, p.add(list(f.path), "text[]"))
    if f.operator == "is_set":
        return f"{reads['at']} IS NOT NULL"
    if f.operator == "is_not_set":
        return f"{reads['at']} IS NULL"
    if f.operator == "in_array":
        at = reads["at"]
        return f"(jsonb_typeof({at}) IN ('array', 'object') AND {at} ?| {p.add(list(f.values), 'text[]')})"
    read = reads["json"] if f.type in ("json", "string") else reads[f.type]
    return _compare(read, f, p, json=True)


def _compare(expr: str, f: model.Filter, p: _Params, json: bool = False) -> str:
    """`expr` (a column, or a typed read of a JSON value) against the filter's values. A JSON
    number is compared as numeric: any JSON number fits one, not every one fits a float8."""
    op, cast = f.operator, "numeric" if json and f.type == "number" else _CAST[f.type]
    if f.type in ("string", "json") and op in ("gt", "gte", "lt", "lte"):
        return f'({expr} COLLATE "C" {_CMP[op]} {p.add(f.values[0], cast)})'  # code-point order
    if op in _CMP:
        return f"({expr} {_CMP[op]} {p.add(f.values[0], cast)})"
    if op in ("contains", "not_contains", "starts_with", "ends_with"):
        escaped = [like_pattern(v)[1:-1] for v in f.values]
        patterns = {"contains": [f"%{e}%" for e in escaped], "not_contains": [f"%{e}%" for e in escaped],
                    "starts_with": [f"{e}%" for e in escaped], "ends_with": [f"%{e}" for e in escaped]}[op]
        arg = p.add(patterns, "text[]")
        if op == "not_contains":
            return f"({expr} IS NOT NULL AND NOT ({expr} ILIKE ANY ({arg})))"
        return f"({expr} ILIKE ANY ({arg}))"
    if op == "in_date_range":
        return f"({expr} BETWEEN {p.add(f.values[0], cast)} AND {p.add(f.values[1], cast)})"
    if op == "not_in_date_range":
        return f"(NOT ({expr} BETWEEN {p.add(f.values[0], cast)} AND {p.add(f.values[1], cast)}))"
    if op == "in_the_last_days":
        return f"({expr} > now() - make_interval(days => {p.add(f.values[0], 'int')}))"
    raise AssertionError(f"operator without SQL: {op}")  # model.parse_tree lets none through


# ---------------------------------------------------------------- other leaves

def _list_leaf(leaf: model.ListLeaf, p: _Params, c: str) -> str:
    status = f" AND cl.status = {p.add(leaf.status, 'text')}" if leaf.status else ""
    members = f"""(SELECT cl.email FROM contact_lists cl
        JOIN lists l ON l.workspace_id = cl.workspace_id AND l.id = cl.list_id AND l.deleted_at IS NULL
       WHERE cl.workspace_id = {p.workspace} AND cl.list_id = {p.add(leaf.list_id, 'text')}
         AND cl.deleted_at IS NULL{status}{p.within('cl')})"""
    return f"({c}.email {'IN' if leaf.operator == 'in' else 'NOT IN'} {members})"


def _timeframe(col: str, frame: model.Timeframe, p: _Params) -> str:
    op, v = frame.operator, frame.values
    if op == "anytime":
        return ""
    if op == "in_the_last_days":
        return f" AND {col} > now() - make_interval(days => {p.add(v[0], 'int')})"
    if op == "in_date_range":
        return f" AND {col} BETWEEN {p.add(v[0], 'timestamptz')} AND {p.add(v[1], 'timestamptz')}"
    return f" AND {col} {_CMP[op]} {p.add(v[0], 'timestamptz')}"


def operation_sql(kind: str) -> str:
    """timeline.model.operation_of in SQL: a timeline entry's operation from its kind."""
    inserts = ", ".join(f"'{v}'" for v in timeline_model.INSERT_VERBS)
    deletes = ", ".join(f"'{v}'" for v in timeline_model.DELETE_VERBS)
    verb = f"regexp_replace({kind}, '^.*\\.', '')"
    return (f"(CASE WHEN position('.' in {kind}) = 0 AND split_part({kind}, '_', 1) IN ('insert', 'update', 'delete')"
            f" THEN split_part({kind}, '_', 1) WHEN {verb} IN ({inserts}) THEN 'insert'"
            f" WHEN {verb} IN ({deletes}) THEN 'delete' ELSE 'update' END)")


_TIMELINE_COLUMNS = {"operation": operation_sql("t.kind"), "entity_type": "t.entity_type",
                     "entity_id": "t.entity_id", "created_at": "t.created_at"}


def _timeline_leaf(leaf: model.TimelineLeaf, p: _Params, c: str) -> str:
    where = [f"t.workspace_id = {p.workspace}", f"t.kind = {p.add(leaf.kind, 'text')}"]
    if leaf.template_id:
        where.append(f"""EXISTS (SELECT 1 FROM message_history m
               WHERE m.workspace_id = t.workspace_id AND m.id = t.entity_id
                 AND m.template_id = {p.add(leaf.template_id, 'text')})""")
    for f in leaf.filters:
        col = _TIMELINE_COLUMNS[f.field]
        if f.operator == "is_set":
            where.append(f"{col} IS NOT NULL")
        elif f.operator == "is_not_set":
            where.append(f"{col} IS NULL")
        else:
            where.append(_compare(col, f, p))
    frame = _timeframe("t.created_at", leaf.timeframe, p)
    n, op = leaf.count_value, leaf.count_operator
    # A contact without entries has the count 0: a count that 0 satisfies is the complement
    # (NOT IN) of the contacts whose count does not.
    if op == "at_least" and n == 0:
        return "true"
    if op == "at_least":
        keep, having = "IN", f">= {p.add(n, 'bigint')}"
    elif op == "at_most":
        keep, having = "NOT IN", f"> {p.add(n, 'bigint')}"
    elif n == 0:
        keep, having = "NOT IN", ">= 1"
    else:
        keep, having = "IN", f"= {p.add(n, 'bigint')}"
    counted = (f"(SELECT t.email FROM contact_timeline t WHERE {' AND '.join(where)}{frame}{p.within('t')}"
               f" GROUP BY t.email HAVING count(*) {having})")
    return f"({c}.email {keep} {counted})"


_AGGREGATE = {"sum": "coalesce(sum(e.goal_value), 0)", "count": "count(*)",
              "avg": "coalesce(avg(e.goal_value), 0)", "min": "min(e.goal_value)", "max": "max(e.goal_value)"}


def _goal_leaf(leaf: model.GoalLeaf, p: _Params, c: str) -> str:
    where = [f"e.workspace_id = {p.workspace}", "e.deleted_at IS NULL"]
    where.append("e.goal_type IS NOT NULL" if leaf.goal_type == "*" else f"e.goal_type = {p.add(leaf.goal_type, 'text')}")
    if leaf.goal_name:
        where.append(f"e.goal_name = {p.add(leaf.goal_name, 'text')}")
    frame = _timeframe("e.occurred_at", leaf.timeframe, p)
    agg = _AGGREGATE[leaf.aggregate]
    if leaf.operator == "between":
        having = f"{agg} BETWEEN {p.add(leaf.value, 'numeric')} AND {p.add(leaf.value_2, 'numeric')}"
    else:
        having = f"{agg} {({'gte': '>=', 'lte': '<=', 'eq': '='}[leaf.operator])} {p.add(leaf.value, 'numeric')}"
    # only contacts with a matching event have a group: a contact without any never matches
    return (f"({c}.email IN (SELECT e.email FROM custom_events e WHERE {' AND '.join(where)}{frame}{p.within('e')}"
            f" GROUP BY e.email HAVING {having}))")
