"""Reporting: the summary table, statistics over seeds, model cost, figures and the HTML report's pieces."""
