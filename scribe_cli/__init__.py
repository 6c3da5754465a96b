"""scribe-cli: Stan-backed Bayesian count models for single-cell RNA-seq UMI counts."""

__version__ = "0.1.0"
