"""Reports of a run: reward-model accuracy by preference strength, the rounds' evaluation, `report.md`, the
self-contained `report.html` and the progress plots. Top floor of the library: it reads stages' outputs and
imports the stages' helpers, never the other way round."""
