#!/usr/bin/env python3
"""Check the wsus-edge Grafana dashboard and Prometheus rules against a node's real metrics.

Usage:
    check_dashboard.py DASHBOARD.json METRICS.txt [RULES.yml ...]

METRICS.txt is what a node's /metrics returns (Prometheus or OpenMetrics text exposition; `-`
reads it from standard input). Every metric name used by a PromQL expression of the dashboard
(panel targets and template variable queries) and of the rule files (`expr:`, and `series:` of
promtool test files) must be one the exposition defines, so a renamed metric fails the check.
Without RULES, the rule files beside the dashboard's directory are checked:
../prometheus/alerts.yml and ../prometheus/alerts_test.yml.

Names are taken from the `# TYPE` lines, so a labelled family that has no sample yet still
counts. A family maps to the names PromQL sees: counter `x` to `x_total` (OpenMetrics; a
Prometheus text counter already named `x_total` stays), histogram `x` to `x_bucket`, `x_sum`,
`x_count`, summary `x` to `x`, `x_sum`, `x_count`, info `x` to `x_info`. `up` is always allowed
(Prometheus adds it to every target); --allow NAME adds others.

The dashboard is also checked for shape: valid JSON, unique panel ids, grid positions within 24
columns, a `datasource` template variable that every panel and target uses, and no reference to
an undefined template variable.

Exit status: 0 all good, 1 a check failed (each problem on stderr), 2 bad usage or unreadable
input. Python standard library only.
"""

import argparse
import difflib
import json
import os
import re
import sys

# ---------------------------------------------------------------------------------------------
# PromQL

AGGREGATORS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}

FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "double_exponential_smoothing", "exp", "floor", "histogram_avg",
    "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev",
    "histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta", "increase", "info",
    "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2",
    "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi",
    "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets",
    "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc",
    "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh",
    "time", "timestamp", "vector", "year",
    # The @ modifier's start() and end().
    "start", "end",
}

# Keywords (case-insensitive in PromQL) that are never metric names.
KEYWORDS = {"and", "or", "unless", "offset", "bool", "atan2", "inf", "nan"}
# Keywords followed by a parenthesised list of label names.
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}

# Grafana template variables: $name, ${name}, ${name:format}, [[name]] (old syntax).
GRAFANA_VARIABLE = re.compile(
    r"\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)(?::[^\]]*)?\]\]"
)

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)[A-Za-z0-9_]*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}\[\]@])
    """,
    re.VERBOSE,
)


class PromQLError(ValueError):
    pass


def grafana_variables(text):
    """The template variable names a Grafana expression refers to."""
    return {next(g for g in m.groups() if g) for m in GRAFANA_VARIABLE.finditer(text)}


def tokenize(expr):
    """PromQL tokens as (kind, text) pairs, spaces and comments dropped."""
    tokens = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise PromQLError(f"cannot read {expr[pos:pos + 20]!r}")
        kind = m.lastgroup
        if kind not in ("space", "comment"):
            tokens.append((kind, m.group()))
        pos = m.end()
    return tokens


def _unquote(s):
    if s[0] == "`":
        return s[1:-1]
    body = s[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def _skip_group(tokens, i, open_, close):
    """The index after the group that opens at tokens[i] (which is `open_`)."""
    depth = 0
    while i < len(tokens):
        text = tokens[i][1]
        if text == open_:
            depth += 1
        elif text == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise PromQLError(f"unbalanced {open_!r}")


def metric_names(expr):
    """The metric names a PromQL expression selects, in order of appearance.

    Grafana template variables are accepted (a variable stands for a value). Raises PromQLError
    for text that is not PromQL or calls an unknown function.
    """
    # A template variable stands for a number, a duration or a label value; as a bare token
    # it is replaced by a number, which is never a metric name.
    expr = GRAFANA_VARIABLE.sub("0", expr)
    tokens = tokenize(expr)
    names = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else None
        if text == "{":
            end = _skip_group(tokens, i, "{", "}")
            # A {__name__="x"} matcher names a metric.
            inner = tokens[i + 1:end - 1]
            for j in range(len(inner) - 2):
                if inner[j] == ("ident", "__name__") and inner[j + 1][1] == "=" \
                        and inner[j + 2][0] == "string":
                    names.append(_unquote(inner[j + 2][1]))
            i = end
        elif text == "[":
            # A range or subquery: durations and template variables only.
            i = _skip_group(tokens, i, "[", "]")
        elif kind == "ident":
            lower = text.lower()
            if lower in LABEL_LIST_KEYWORDS:
                i = _skip_group(tokens, i + 1, "(", ")") if nxt == "(" else i + 1
            elif lower in KEYWORDS:
                i += 1
            elif lower in AGGREGATORS and (nxt or "").lower() in ("(", "by", "without"):
                i += 1
            elif nxt == "(":
                if text not in FUNCTIONS:
                    raise PromQLError(f"unknown function {text}()")
                i += 1
            else:
                names.append(text)
                i += 1
        elif kind == "string":
            i += 1
        else:
            i += 1
    return names


def _split_top_level_commas(text):
    parts, depth, start = [], 0, 0
    for pos, ch in enumerate(text):
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:pos])
            start = pos + 1
    parts.append(text[start:])
    return parts


def variable_query_expressions(query):
    """The PromQL inside a Grafana Prometheus template variable query."""
    query = query.strip()
    m = re.fullmatch(r"(\w+)\s*\((.*)\)", query, re.S)
    if m is None:
        return [query] if query else []
    func, args = m.group(1), m.group(2)
    if func == "label_values":
        parts = _split_top_level_commas(args)
        # label_values(label) names no metric; label_values(selector, label) does.
        return [parts[0]] if len(parts) == 2 else []
    if func == "query_result":
        return [args]
    if func in ("label_names", "metrics"):
        return []
    return [query]


# ---------------------------------------------------------------------------------------------
# Exposition

FAMILY_SUFFIXES = {
    "counter": ["_total", "_created"],
    "histogram": ["_bucket", "_sum", "_count", "_created"],
    "gaugehistogram": ["_bucket", "_gsum", "_gcount"],
    "summary": ["", "_sum", "_count", "_created"],
    "info": ["_info"],
}


def exposition_names(text):
    """The metric names a Prometheus/OpenMetrics text exposition defines: {name: family}."""
    names = {}
    families = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                family, kind = parts[2], parts[3].strip().lower()
                families += 1
                suffixes = FAMILY_SUFFIXES.get(kind, [""])
                if kind == "counter" and family.endswith("_total"):
                    # Prometheus text format: the family is named after its samples.
                    suffixes = [""]
                for suffix in suffixes:
                    names.setdefault(family + suffix, family)
            continue
        m = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line)
        if m is None:
            raise ValueError(f"not a sample line: {line[:60]!r}")
        names.setdefault(m.group(), m.group())
    if families == 0:
        raise ValueError("no '# TYPE' line: not a Prometheus text exposition")
    return names


# ---------------------------------------------------------------------------------------------
# YAML (the little of it rule files and promtool test files use, without a YAML library)

def _yaml_unquote_double(s):
    escapes = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "/": "/", "0": "\0", " ": " "}

    def repl(m):
        esc = m.group(1)
        if esc[0] in "xuU":
            return chr(int(esc[1:], 16))
        return escapes.get(esc, esc)

    return re.sub(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", repl, s)


def yaml_values(text, keys):
    """(line number, key, value) of every `key: value` in a YAML text whose key is in keys.

    Handles plain, single- and double-quoted scalars (also over several lines) and block
    scalars (| and >). Enough for Prometheus rule files and promtool test files.
    """
    lines = text.split("\n")
    out = []
    key_re = re.compile(r"^(\s*(?:-\s+)?)(" + "|".join(map(re.escape, keys)) + r"):(?:\s+(.*))?$")
    i = 0
    while i < len(lines):
        m = key_re.match(lines[i])
        if m is None:
            i += 1
            continue
        lineno, col, key = i + 1, len(m.group(1)), m.group(2)
        value = (m.group(3) or "").rstrip()
        i += 1

        def continuation(start):
            end = start
            while end < len(lines) and (
                    not lines[end].strip()
                    or len(lines[end]) - len(lines[end].lstrip()) > col):
                end += 1
            # Trailing blank lines belong to what follows.
            while end > start and not lines[end - 1].strip():
                end -= 1
            return lines[start:end], end

        if value[:1] in ("|", ">"):
            block, i = continuation(i)
            indents = [len(b) - len(b.lstrip()) for b in block if b.strip()]
            strip = min(indents) if indents else 0
            out.append((lineno, key, "\n".join(b[strip:] for b in block)))
        elif value[:1] in ('"', "'"):
            quote = value[0]
            buf = value
            pattern = r'^"(?:[^"\\]|\\.)*"' if quote == '"' else r"^'(?:[^']|'')*'"
            while re.match(pattern, buf, re.S) is None and i < len(lines):
                buf += " " + lines[i].strip()
                i += 1
            m2 = re.match(pattern, buf, re.S)
            if m2 is None:
                raise ValueError(f"line {lineno}: unterminated quoted value")
            body = m2.group()[1:-1]
            out.append((lineno, key, _yaml_unquote_double(body) if quote == '"'
                        else body.replace("''", "'")))
        else:
            value = re.sub(r"\s+#.*$", "", value)
            block, i = continuation(i)
            parts = [value] + [b.strip() for b in block if b.strip() and
                               not b.strip().startswith("#")]
            out.append((lineno, key, " ".join(p for p in parts if p)))
    return out


# ---------------------------------------------------------------------------------------------
# Checks

class Problems:
    def __init__(self):
        self.items = []

    def add(self, where, message):
        self.items.append(f"{where}: {message}")


def check_expression(expr, where, allowed, problems, used, collected=None):
    if collected is not None:
        collected.append((where, expr))
    try:
        names = metric_names(expr)
    except PromQLError as e:
        problems.add(where, f"{e} in {expr!r}")
        return 0
    for name in names:
        used.add(name)
        if name not in allowed:
            hint = difflib.get_close_matches(name, list(allowed), n=1)
            problems.add(where, f"metric {name} is not exported by the node" +
                         (f" (did you mean {hint[0]}?)" if hint else ""))
    return 1


def iter_panels(panels):
    for panel in panels or []:
        yield panel
        # A collapsed row holds its panels.
        yield from iter_panels(panel.get("panels"))


def check_dashboard(path, allowed, problems, used, collected=None):
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        problems.add(name, f"not valid JSON: {e}")
        return 0
    if not isinstance(dash, dict) or not isinstance(dash.get("panels"), list):
        problems.add(name, "no panels list")
        return 0
    for key in ("title", "uid", "schemaVersion"):
        if key not in dash:
            problems.add(name, f"no {key}")

    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if ds is None or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.add(name, "no template variable `datasource` of type datasource (prometheus)")
    defined = set(variables)

    def check_datasource(where, value):
        uid = value.get("uid") if isinstance(value, dict) else value
        if uid not in ("${datasource}", "$datasource"):
            problems.add(where, f"datasource {value!r} is not the ${{datasource}} variable")

    count = 0
    for var_name, var in variables.items():
        if var.get("type") != "query":
            continue
        where = f"{name}: variable {var_name}"
        check_datasource(where, var.get("datasource"))
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        for expr in variable_query_expressions(query or ""):
            count += check_expression(expr, where, allowed, problems, used, collected)
            for ref in grafana_variables(expr) - defined:
                if not ref.startswith("__"):
                    problems.add(where, f"refers to undefined variable ${ref}")

    ids = set()
    for panel in iter_panels(dash["panels"]):
        title = panel.get("title", "")
        where = f"{name}: panel {title!r} (id {panel.get('id')})"
        pid = panel.get("id")
        if not isinstance(pid, int):
            problems.add(where, "no integer id")
        elif pid in ids:
            problems.add(where, "duplicate id")
        ids.add(pid)
        grid = panel.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")):
            problems.add(where, "no gridPos {x, y, w, h}")
        elif grid["x"] < 0 or grid["w"] < 1 or grid["x"] + grid["w"] > 24:
            problems.add(where, "gridPos outside the 24 columns")
        if panel.get("type") == "row":
            continue
        check_datasource(where, panel.get("datasource"))
        targets = panel.get("targets") or []
        if not targets and panel.get("type") not in ("text", "dashlist", "news"):
            problems.add(where, "no targets")
        refs = set()
        for target in targets:
            ref = target.get("refId")
            twhere = f"{where} target {ref}"
            if not ref or ref in refs:
                problems.add(twhere, "missing or duplicate refId")
            refs.add(ref)
            tds = target.get("datasource")
            if isinstance(tds, dict) and tds.get("type") == "__expr__":
                continue  # a server-side expression over other targets
            if tds is not None:
                check_datasource(twhere, tds)
            expr = target.get("expr", "")
            if not expr.strip():
                problems.add(twhere, "empty expr")
                continue
            for ref_var in grafana_variables(expr) - defined:
                if not ref_var.startswith("__"):
                    problems.add(twhere, f"refers to undefined variable ${ref_var}")
            count += check_expression(expr, twhere, allowed, problems, used, collected)
    return count


def check_rules(path, allowed, problems, used):
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        problems.add(name, f"cannot read: {e}")
        return 0
    try:
        values = yaml_values(text, ("expr", "series", "record"))
    except ValueError as e:
        problems.add(name, str(e))
        return 0
    # Recording rules define names of their own.
    allowed = dict(allowed)
    for _, key, value in values:
        if key == "record":
            allowed[value.strip()] = value.strip()
    count = 0
    for lineno, key, value in values:
        if key != "record":
            count += check_expression(value, f"{name}:{lineno} {key}", allowed, problems, used)
    return count


def fill_variables(expr):
    """A Grafana expression with its template variables replaced by plausible values."""
    def value(m):
        name = next(g for g in m.groups() if g)
        return "5m" if name.startswith("__") else ".*"
    return GRAFANA_VARIABLE.sub(value, expr)


def promql_rule_file(collected):
    """A rule file of recording rules, one per expression (promtool parses each)."""
    lines = ["# Generated by check_dashboard.py --promql-out: the dashboard's expressions.",
             "groups:", "  - name: dashboard-expressions", "    rules:"]
    for n, (where, expr) in enumerate(collected):
        lines.append(f"      # {where}")
        lines.append(f"      - record: dashboard:expression_{n}")
        lines.append("        expr: |")
        lines.extend("          " + line for line in fill_variables(expr).split("\n"))
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Check the Grafana dashboard and Prometheus rules against the metrics a "
                    "wsus-edge node exports.")
    parser.add_argument("dashboard", help="the Grafana dashboard JSON")
    parser.add_argument("metrics", help="a node's /metrics output (text exposition), - for stdin")
    parser.add_argument("rules", nargs="*",
                        help="Prometheus rule files or promtool test files (default: "
                             "../prometheus/alerts.yml and alerts_test.yml beside the dashboard)")
    parser.add_argument("--allow", action="append", default=[], metavar="NAME",
                        help="a further metric name to accept (up is always accepted)")
    parser.add_argument("--promql-out", metavar="FILE",
                        help="also write the dashboard's expressions, template variables "
                             "filled in, as a Prometheus rule file (for `promtool check rules`)")
    args = parser.parse_args(argv)

    try:
        if args.metrics == "-":
            text = sys.stdin.read()
        else:
            with open(args.metrics, encoding="utf-8") as f:
                text = f.read()
        allowed = exposition_names(text)
    except (OSError, ValueError) as e:
        print(f"check_dashboard: {args.metrics}: {e}", file=sys.stderr)
        return 2
    if not any(n.startswith("wsus_edge_") for n in allowed):
        print(f"check_dashboard: {args.metrics}: no wsus_edge_ metric", file=sys.stderr)
        return 2
    for extra in ["up"] + args.allow:
        allowed[extra] = extra

    rules = args.rules
    if not rules:
        base = os.path.join(os.path.dirname(os.path.abspath(args.dashboard)), "..", "prometheus")
        rules = [os.path.normpath(os.path.join(base, f)) for f in ("alerts.yml", "alerts_test.yml")]
    for path in [args.dashboard] + rules:
        if not os.path.isfile(path):
            print(f"check_dashboard: {path}: no such file", file=sys.stderr)
            return 2

    problems = Problems()
    used = set()
    collected = []
    n_dash = check_dashboard(args.dashboard, allowed, problems, used, collected)
    n_rules = sum(check_rules(path, allowed, problems, used) for path in rules)
    if args.promql_out:
        with open(args.promql_out, "w", encoding="utf-8") as f:
            f.write(promql_rule_file(collected))
    if problems.items:
        for item in problems.items:
            print(item, file=sys.stderr)
        print(f"check_dashboard: {len(problems.items)} problem(s)", file=sys.stderr)
        return 1
    families = sorted({allowed[n] for n in used if n in allowed})
    unused = sorted({f for f in allowed.values() if f.startswith("wsus_edge_")} - set(families))
    print(f"check_dashboard: ok: {n_dash} dashboard expressions and {n_rules} in rule files "
          f"use {len(families)} metric families, all exported")
    if unused:
        print("check_dashboard: exported but used nowhere: " + ", ".join(unused))
    return 0


if __name__ == "__main__":
    sys.exit(main())
