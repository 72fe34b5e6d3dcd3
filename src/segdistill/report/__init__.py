"""Reporting: the summary table, statistics over seeds, figures and the HTML report's pieces.

The report stage's Paddle jobs (the models' cost, the exported student) are segdistill.cost and segdistill.export.
"""
