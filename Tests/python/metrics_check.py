"""Reads a node's /metrics text (Prometheus exposition format) with the official
prometheus_client parser, an implementation independent of swift-prometheus, and prints JSON:

  {"families": {name: type}, "samples": [[sample name, {labels}, value], ...],
   "dashboard_missing": [series a dashboard expression names that /metrics lacks]}

Usage: metrics_check.py METRICS_FILE [GRAFANA_DASHBOARD_JSON]
A parse error exits non-zero with the parser's message.
"""
import json
import re
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = open(sys.argv[1], encoding="utf-8").read()
    families = {}
    samples = []
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for s in family.samples:
            samples.append([s.name, dict(s.labels), s.value])
    out = {"families": families, "samples": samples}
    if len(sys.argv) > 2:
        dashboard = json.load(open(sys.argv[2], encoding="utf-8"))
        names = {s[0] for s in samples}
        missing = set()
        for panel in dashboard.get("panels", []):
            for target in panel.get("targets", []):
                for series in re.findall(r"\bkiana_[a-z0-9_]+", target.get("expr", "")):
                    if series not in names:
                        missing.add(series)
        out["dashboard_missing"] = sorted(missing)
        out["dashboard_panels"] = len(dashboard.get("panels", []))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
