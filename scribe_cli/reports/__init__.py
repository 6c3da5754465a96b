"""Reports on a posterior file: summary tables and posterior predictive checks."""
