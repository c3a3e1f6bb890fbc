#!/usr/bin/env python3
"""Tests of check_dashboard.py: `python3 -m unittest deploy/grafana/test_check_dashboard.py`
(or run this file). Standard library only; uses testdata/metrics.txt, a node's exposition."""

import contextlib
import io
import json
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import check_dashboard as cd  # noqa: E402

DASHBOARD = os.path.join(HERE, "wsus-edge.json")
METRICS = os.path.join(HERE, "testdata", "metrics.txt")
RULES = [os.path.join(HERE, "..", "prometheus", f) for f in ("alerts.yml", "alerts_test.yml")]


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cd.main(list(args))
    return code, out.getvalue(), err.getvalue()


class MetricNames(unittest.TestCase):
    def names(self, expr):
        return cd.metric_names(expr)

    def test_selector_and_labels(self):
        self.assertEqual(self.names('wsus_edge_ready{instance=~"a|b", job="wsus-edge"} == 0'),
                         ["wsus_edge_ready"])

    def test_aggregation_and_histogram(self):
        expr = ('histogram_quantile(0.99, sum by (le, instance) (rate('
                'wsus_edge_soap_call_duration_seconds_bucket{operation="SyncUpdates"}[5m]))) > 2')
        self.assertEqual(self.names(expr), ["wsus_edge_soap_call_duration_seconds_bucket"])

    def test_grouping_after_the_aggregation(self):
        self.assertEqual(self.names("sum(rate(x_total[5m])) by (reason, le)"), ["x_total"])
        self.assertEqual(self.names("SUM WITHOUT (tier) (x)"), ["x"])

    def test_vector_matching(self):
        expr = ("a / on(instance) group_left(version, commit) b and ignoring(tier) c "
                "unless on (instance) d or e > bool 1 * group_right f")
        # `group_right` without a list is a keyword too; f is a metric.
        self.assertEqual(self.names(expr), ["a", "b", "c", "d", "e", "f"])

    def test_group_left_without_list(self):
        self.assertEqual(self.names("a > on(instance) group_left() (0.9 * b)"), ["a", "b"])

    def test_strings_hold_no_names(self):
        self.assertEqual(self.names('x{a="rate(y) by (z)", b=\'w{}\'} + label_replace(v, "d", "$1", "s", "(.*)")'),
                         ["x", "v"])

    def test_name_matcher(self):
        self.assertEqual(self.names('{__name__="wsus_edge_ready", job="x"}'), ["wsus_edge_ready"])
        self.assertEqual(self.names('{__name__=~"wsus_edge_.*"}'), [])

    def test_ranges_offsets_subqueries_and_at(self):
        expr = "max_over_time(rate(x[5m])[1h:30s]) offset 1h30m + y @ start() - z @ 1700000000"
        self.assertEqual(self.names(expr), ["x", "y", "z"])

    def test_numbers_and_keywords(self):
        self.assertEqual(self.names("1e3 * x + 0x1F - .5 / Inf + NaN atan2 y"), ["x", "y"])

    def test_comments(self):
        self.assertEqual(self.names("x # and y\n + z"), ["x", "z"])

    def test_grafana_variables(self):
        expr = ('sum by (path) (rate(wsus_edge_requests_total{instance=~"$instance", '
                'job="${job:regex}"}[$__rate_interval])) * [[factor]]')
        self.assertEqual(self.names(expr), ["wsus_edge_requests_total"])
        self.assertEqual(cd.grafana_variables(expr), {"instance", "job", "__rate_interval", "factor"})

    def test_recording_rule_names(self):
        self.assertEqual(self.names("instance:wsus_edge_requests:rate5m > 1"),
                         ["instance:wsus_edge_requests:rate5m"])

    def test_unknown_function(self):
        with self.assertRaises(cd.PromQLError):
            self.names("rates(x[5m])")

    def test_unbalanced(self):
        with self.assertRaises(cd.PromQLError):
            self.names("sum(x{a=\"b\"")

    def test_variable_queries(self):
        self.assertEqual(cd.variable_query_expressions("label_values(wsus_edge_build_info, instance)"),
                         ["wsus_edge_build_info"])
        self.assertEqual(cd.variable_query_expressions('label_values(x{a="b,c"}, instance)'),
                         ['x{a="b,c"}'])
        self.assertEqual(cd.variable_query_expressions("label_values(instance)"), [])
        self.assertEqual(cd.variable_query_expressions("query_result(topk(5, y))"), ["topk(5, y)"])
        self.assertEqual(cd.variable_query_expressions("metrics(wsus_edge_.*)"), [])


class Exposition(unittest.TestCase):
    def test_openmetrics_families(self):
        names = cd.exposition_names(
            "# TYPE a counter\na_total 1\n"
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"
            "# TYPE i info\ni_info{v=\"1\"} 1\n"
            "# TYPE g gauge\ng 1\n"
            "# TYPE empty counter\n"
            "# EOF\n")
        for name in ("a_total", "h_bucket", "h_sum", "h_count", "i_info", "g", "empty_total"):
            self.assertIn(name, names)
        # A counter or histogram family's own name selects nothing in Prometheus.
        for name in ("a", "h", "i", "empty"):
            self.assertNotIn(name, names)
        self.assertEqual(names["h_bucket"], "h")

    def test_prometheus_text_counter(self):
        names = cd.exposition_names("# HELP x_total X.\n# TYPE x_total counter\nx_total 3\n"
                                    "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 1\ns_count 1\n")
        self.assertIn("x_total", names)
        self.assertNotIn("x_total_total", names)
        self.assertIn("s", names)
        self.assertIn("s_count", names)

    def test_not_an_exposition(self):
        with self.assertRaises(ValueError):
            cd.exposition_names("<html>forbidden</html>\n")
        with self.assertRaises(ValueError):
            cd.exposition_names("")

    def test_fixture(self):
        with open(METRICS, encoding="utf-8") as f:
            names = cd.exposition_names(f.read())
        self.assertIn("wsus_edge_requests_total", names)
        self.assertIn("wsus_edge_upstream_errors_total", names)  # TYPE line only
        self.assertIn("wsus_edge_request_duration_seconds_bucket", names)
        self.assertIn("process_cpu_seconds_total", names)
        self.assertNotIn("wsus_edge_requests", names)


class Yaml(unittest.TestCase):
    def test_scalar_styles(self):
        text = (
            "groups:\n"
            "  - name: g\n"
            "    rules:\n"
            "      - alert: A\n"
            "        expr: up == 0  # a comment\n"
            "      - alert: B\n"
            "        expr: |\n"
            "          sum by (x) (\n"
            "            rate(b_total[5m])\n"
            "          )\n"
            "\n"
            "        for: 5m\n"
            "      - expr: >-\n"
            "          c\n"
            "          > 1\n"
            "        record: r:c\n"
            "      - expr: \"d{job=\\\"x\\\"}\n"
            "          > 2\"\n"
            "      - expr: 'e{job=''y''}'\n"
            "      - expr: f\n"
            "          + g\n"
            "tests:\n"
            "  - input_series:\n"
            "      - series: 'h{a=\"b\"}'\n"
            "        values: '1x5'\n")
        values = cd.yaml_values(text, ("expr", "series", "record"))
        self.assertEqual([(k, v) for _, k, v in values], [
            ("expr", "up == 0"),
            ("expr", "sum by (x) (\n  rate(b_total[5m])\n)"),
            ("expr", "c\n> 1"),
            ("record", "r:c"),
            ("expr", 'd{job="x"} > 2'),
            ("expr", "e{job='y'}"),
            ("expr", "f + g"),
            ("series", 'h{a="b"}'),
        ])
        self.assertEqual(values[0][0], 5)


class EndToEnd(unittest.TestCase):
    def test_the_real_files_pass(self):
        code, out, err = run(DASHBOARD, METRICS)
        self.assertEqual(code, 0, err)
        self.assertIn("ok:", out)

    def test_a_renamed_metric_fails(self):
        with open(METRICS, encoding="utf-8") as f:
            text = f.read()
        renamed = text.replace("wsus_edge_cache_hits", "wsus_edge_cache_hit")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "metrics.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.write(renamed)
            code, _, err = run(DASHBOARD, path, *RULES)
        self.assertEqual(code, 1)
        self.assertIn("metric wsus_edge_cache_hits_total is not exported", err)
        self.assertIn("did you mean wsus_edge_cache_hit_total?", err)

    def test_a_renamed_metric_in_the_rules_fails(self):
        with open(METRICS, encoding="utf-8") as f:
            text = f.read()
        renamed = text.replace("wsus_edge_sync_failures", "wsus_edge_sync_errors")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "metrics.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.write(renamed)
            code, _, err = run(DASHBOARD, path, *RULES)
        self.assertEqual(code, 1)
        self.assertIn("alerts.yml:", err)
        self.assertIn("alerts_test.yml:", err)
        self.assertIn("wsus_edge_sync_failures_total", err)

    def test_dashboard_problems(self):
        with open(DASHBOARD, encoding="utf-8") as f:
            dash = json.load(f)
        panel = next(p for p in dash["panels"] if p["type"] != "row")
        panel["targets"][0]["expr"] = 'wsus_edge_nonsense{instance=~"$node"}'
        panel["datasource"] = {"type": "prometheus", "uid": "prometheus"}
        dash["panels"].append(dict(panel))  # a duplicate id
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "dash.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(dash, f)
            code, _, err = run(path, METRICS, *RULES)
        self.assertEqual(code, 1)
        self.assertIn("metric wsus_edge_nonsense is not exported", err)
        self.assertIn("undefined variable $node", err)
        self.assertIn("is not the ${datasource} variable", err)
        self.assertIn("duplicate id", err)

    def test_invalid_json(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "dash.json")
            with open(path, "w", encoding="utf-8") as f:
                f.write("{\"panels\": [")
            code, _, err = run(path, METRICS, *RULES)
        self.assertEqual(code, 1)
        self.assertIn("not valid JSON", err)

    def test_metrics_file_is_required(self):
        with contextlib.redirect_stderr(io.StringIO()):
            with self.assertRaises(SystemExit) as e:
                cd.main([DASHBOARD])
        self.assertEqual(e.exception.code, 2)
        code, _, err = run(DASHBOARD, os.path.join(HERE, "no-such-file.txt"))
        self.assertEqual(code, 2)

    def test_promql_out(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "exprs.yml")
            code, _, err = run(DASHBOARD, METRICS, "--promql-out", path)
            self.assertEqual(code, 0, err)
            with open(path, encoding="utf-8") as f:
                text = f.read()
        self.assertIn("record: dashboard:expression_0", text)
        self.assertNotIn("$", text)
        exprs = [v for _, k, v in cd.yaml_values(text, ("expr",))]
        self.assertGreater(len(exprs), 20)


if __name__ == "__main__":
    unittest.main()
