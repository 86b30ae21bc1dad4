"""Read the JUnit report of the CI test run and print what ran.

Usage: python .ci/count_tests.py REPORT ELAPSED_S PYTEST_STATUS

Prints tests, failures, errors, skipped and the total test time. Under CI=true any skipped
test fails the run (every test's service must be there), and so does a run that collected
nothing (pytest exit 5); otherwise the exit status is pytest's.
"""

import os
import sys
import xml.etree.ElementTree as ET

report, elapsed, status = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if status == 5:
    print("ci: pytest collected no tests (exit 5)", file=sys.stderr)
    sys.exit(1)
root = ET.parse(report).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
count = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
print(f"ci: {count['tests']} tests, {count['failures']} failed, {count['errors']} errors, "
      f"{count['skipped']} skipped; total test time {elapsed} s (pytest exit {status})")
if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes") and count["skipped"]:
    print(f"ci: {count['skipped']} test(s) skipped under CI=true; every test must run", file=sys.stderr)
    sys.exit(1)
sys.exit(1 if status else 0)
