"""Dashboards: plotly figures over a study, optuna-dashboard integration, HTML report.

The search worker calls :func:`refresh_dashboard` after each trial so ``optuna-dashboard``
shows the figures; ``torchcell-search dashboard`` and ``report`` are the user's entry points.
"""

from torchcell_search.dashboards.integration import refresh_dashboard
from torchcell_search.dashboards.report import report_command
from torchcell_search.dashboards.server import dashboard_command

__all__ = ["dashboard_command", "refresh_dashboard", "report_command"]
